"""One explainer protocol: the factory picks the method's class, the cache keys by (model, method).

Every explainer returns the same ``Heatmaps``; the probability it reports comes from the same
forward pass as the heatmap and must equal ``model.predict``'s.
"""

import numpy as np
import pytest
from tensorflow import keras

from cxrlib.explain.base import Heatmaps, canonical_method, display_map
from cxrlib.explain.factory import ExplainerCache, make_explainer, model_file
from cxrlib.explain.gradcam import CamExplainer, target_layer


@pytest.mark.parametrize("name, expected", [("gradcam", "gradcam"), ("gradcam_plus_plus", "gradcam++"),
                                            ("Grad-CAM++", "gradcam++"), ("gradcampp", "gradcam++"),
                                            ("lrp.epsilon", "lrp.epsilon"), ("LRP.Z", "lrp.z")])
def test_canonical_method(name, expected):
    assert canonical_method(name) == expected


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="occlusion"):
        canonical_method("occlusion")


def test_heatmaps_display_and_aliases():
    maps = np.array([[[-1.0, 2.0], [0.5, 0.0]]], np.float32)  # [1, 2, 2]
    h = Heatmaps(maps=maps, class_index=np.array([0]), prob=np.array([0.9], np.float32), signed=True)
    np.testing.assert_allclose(h.display(), display_map(maps))
    assert h.display().max() == 1.0 and h.display().min() == 0.0
    assert h.relevance is h.maps and h.scores is h.prob and len(h) == 1


def test_cam_prob_and_class_come_from_the_model(densenet_model):
    x = np.random.default_rng(0).normal(size=(5, 64, 64, 3)).astype(np.float32)
    probs = densenet_model.predict(x, verbose=0)  # [5, 3]
    h = make_explainer("gradcam", densenet_model).explain(x)
    assert isinstance(h, Heatmaps) and not h.signed and h.method == "gradcam"
    assert h.maps.shape == (5, 64, 64)
    np.testing.assert_array_equal(h.class_index, probs.argmax(1))
    np.testing.assert_allclose(h.prob, probs.max(1), rtol=1e-4, atol=1e-6)
    chosen = make_explainer("gradcam++", densenet_model).explain(x, class_index=2)
    assert (chosen.class_index == 2).all()
    np.testing.assert_allclose(chosen.prob, probs[:, 2], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        make_explainer("gradcam", densenet_model).explain(x, class_index=3)


def test_min_cam_size_picks_a_finer_layer(densenet_model):
    coarse = densenet_model.get_layer(target_layer(densenet_model)).output.shape[1]
    name = target_layer(densenet_model, min_cam_size=8)
    fine = densenet_model.get_layer(name).output.shape[1]
    assert coarse == 2 and fine >= 8, (coarse, name, fine)
    assert CamExplainer(densenet_model, min_cam_size=8).layer == name
    with pytest.raises(ValueError, match="at least 128x128"):
        target_layer(densenet_model, min_cam_size=128)


def test_model_file_accepts_stage_folders(tmp_path):
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "model.h5").write_bytes(b"")
    assert model_file(tmp_path / "stage") == (tmp_path / "stage" / "model.h5").resolve()
    with pytest.raises(FileNotFoundError, match="nothing"):
        model_file(tmp_path / "nothing")


@pytest.mark.slow
def test_cache_keys_by_model_and_method_and_shares_the_lrp_worker(densenet_model, tmp_path):
    from cxrlib.explain.lrp import LRPExplainer

    densenet_model.save(tmp_path / "model.h5")
    x = np.random.default_rng(1).normal(size=(3, 64, 64, 3)).astype(np.float32)
    probs = densenet_model.predict(x, verbose=0)
    with ExplainerCache() as cache:
        eps = cache.get(tmp_path, "lrp.epsilon")  # a stage folder
        assert cache.get(tmp_path / "model.h5", "lrp.epsilon") is eps  # same key: (file, method)
        z = cache.get(tmp_path / "model.h5", "LRP.Z")
        cam = cache.get(tmp_path / "model.h5", "gradcam_plus_plus")
        assert isinstance(eps, LRPExplainer) and isinstance(cam, CamExplainer)
        assert z is not eps and z.worker is eps.worker  # one worker process per model
        assert set(cache._explainers) == {((tmp_path / "model.h5").resolve(), m)
                                          for m in ("lrp.epsilon", "lrp.z", "gradcam++")}
        for ex in (eps, z, cam):
            h = ex.explain(x)
            assert h.maps.shape == (3, 64, 64) and h.signed == (ex is not cam)
            np.testing.assert_array_equal(h.class_index, probs.argmax(1))
            np.testing.assert_allclose(h.prob, probs.max(1), rtol=1e-4, atol=1e-6)
        # default (max_activation selection) = index selection of the predicted classes
        np.testing.assert_allclose(eps.explain(x).maps, eps.explain(x, probs.argmax(1)).maps, rtol=1e-5, atol=1e-8)
        one = eps.explain(x, class_index=[0, 1, 2])  # index mode: the same maps as explaining one by one
        for i in range(3):
            np.testing.assert_allclose(one.maps[i], eps.explain(x[i], class_index=i).maps[0], rtol=1e-4, atol=1e-7)
    assert eps.worker.process._pool._shutdown_thread


@pytest.mark.slow
def test_two_models_share_one_lrp_process_and_keep_their_own_weights(densenet_model, tmp_path):
    """One graph-mode process for all models of a cache; each model's maps as if it were alone."""
    from cxrlib.explain.lrp import lrp

    densenet_model.save(tmp_path / "a.h5")
    other = keras.models.clone_model(densenet_model)  # same layer names, other (random) weights
    other.set_weights([w * 0.5 + 0.01 for w in densenet_model.get_weights()])
    other.save(tmp_path / "b.h5")
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with ExplainerCache() as cache:
        a, b = cache.get(tmp_path / "a.h5", "lrp.epsilon"), cache.get(tmp_path / "b.h5", "lrp.epsilon")
        assert a.worker is not b.worker and a.worker.process is b.worker.process
        got = {"a": a.explain(x, class_index=1).maps, "b": b.explain(x, class_index=1).maps}
        np.testing.assert_allclose(b.explain(x).prob, other.predict(x, verbose=0).max(1), rtol=1e-4, atol=1e-6)
    for name in ("a", "b"):  # each alone in its own process
        alone = lrp(tmp_path / f"{name}.h5", x, "lrp.epsilon", class_index=1).maps
        np.testing.assert_allclose(got[name], alone, rtol=1e-4, atol=1e-7)
    assert not np.allclose(got["a"], got["b"])


@pytest.mark.slow
def test_lrp_from_an_in_memory_model_cleans_its_file(densenet_model):
    import gc

    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    ex = make_explainer("lrp.epsilon", densenet_model)
    folder = ex.model_path.parent
    with ex:
        h = ex.explain(x)
    assert h.signed and h.maps.shape == (2, 64, 64) and folder.is_dir()
    del ex
    gc.collect()
    assert not folder.exists()

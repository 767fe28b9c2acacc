"""LRP through iNNvestigate in a worker process: conservation, fast path, class choice, errors.

Tolerances (measured on the trained bias-free CNN below, 8 images): sum(relevance) / logit was
1.0000 for lrp.epsilon (epsilon=1e-9), lrp.z and lrp.alpha_1_beta_0, so the test allows 1e-3
relative. With biases, relevance leaks into the biases (ratios 0.33-0.95 measured on the same
architecture with biases) and the sequential presets (epsilon=0.1 on dense layers) gave ratios of
0.28-0.52: conservation is only asserted where LRP theory promises it.
"""

import numpy as np
import pytest

from cxrlib.explain.lrp import METHODS, LRPExplainer, display_map, lrp

pytestmark = pytest.mark.slow


def _data(n, rng):
    """Label 1 when the top-left quadrant is brighter: a task a small CNN learns quickly."""
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.5, (n, 16, 16, 1)).astype(np.float32)
    x[y == 1, :8, :8] += 0.5
    return x, y


def _train(path, bias: bool):
    from tensorflow import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = _data(256, rng)
    inp = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", use_bias=bias, name="c1")(inp)
    h = keras.layers.MaxPooling2D(name="p1")(h)
    h = keras.layers.Conv2D(8, 3, activation="relu", use_bias=bias, name="c2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(16, activation="relu", use_bias=bias, name="d1")(h)
    out = keras.layers.Dense(2, activation="softmax", use_bias=bias, name="out")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    xt, yt = _data(64, np.random.default_rng(1))
    acc = float((model.predict(xt, verbose=0).argmax(1) == yt).mean())
    model.save(path)
    return acc, xt[:6]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("lrp")
    acc, x = _train(str(d / "nobias.h5"), bias=False)
    return {"path": d / "nobias.h5", "acc": acc, "x": x, "dir": d}


@pytest.fixture(scope="module")
def fast_explainer(trained):
    with LRPExplainer(trained["path"], fast=True) as ex:
        yield ex


def test_model_is_trained(trained):
    assert trained["acc"] > 0.9


@pytest.mark.parametrize("method,params", [("lrp.epsilon", {"epsilon": 1e-9}), ("lrp.z", {}),
                                           ("lrp.alpha_1_beta_0", {})])
def test_conservation_on_trained_bias_free_model(fast_explainer, trained, method, params):
    r = fast_explainer.explain(trained["x"], method, **params)
    logit = r.logits[np.arange(len(r.class_index)), r.class_index]  # [N]
    assert np.all(np.abs(logit) > 0.1)
    np.testing.assert_allclose(r.relevance.sum(axis=(1, 2)), logit, rtol=1e-3)


def test_every_method_finite_maps_of_input_size(fast_explainer, trained):
    for method in METHODS:
        r = fast_explainer.explain(trained["x"], method)
        assert r.relevance.shape == (6, 16, 16), method
        assert np.isfinite(r.relevance).all(), method
        d = display_map(r.relevance)
        assert d.min() >= 0 and d.max() <= 1


def test_chosen_class_and_predicted_class(fast_explainer, trained):
    x = trained["x"]
    pred = fast_explainer.explain(x, "lrp.epsilon")
    assert (pred.class_index == pred.probs.argmax(1)).all()
    other = 1 - pred.class_index
    r = fast_explainer.explain(x, "lrp.epsilon", class_index=other, epsilon=1e-9)
    assert (r.class_index == other).all()
    np.testing.assert_allclose(r.relevance.sum(axis=(1, 2)), r.logits[np.arange(6), other], rtol=1e-3, atol=1e-4)


def test_fast_graph_layer_creation_gives_the_same_maps(fast_explainer, trained):
    """The private Keras flag only changes how constants enter the graph, not the maps."""
    assert fast_explainer.info["flag"] is True
    with LRPExplainer(trained["path"], fast=False) as slow:
        assert slow.info["flag"] is False
        for method in ("lrp.epsilon", "lrp.alpha_1_beta_0", "lrp.sequential_preset_a"):
            a = fast_explainer.explain(trained["x"], method).relevance
            b = slow.explain(trained["x"], method).relevance
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=method)


def test_parent_process_stays_eager_and_bad_inputs(trained, fast_explainer):
    import tensorflow as tf

    assert tf.executing_eagerly()
    with pytest.raises(ValueError, match="do not fit"):
        fast_explainer.explain(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="not an LRP method"):
        fast_explainer.explain(trained["x"], "gradcam")
    with pytest.raises(ValueError, match=r"\.h5"):
        LRPExplainer(trained["dir"] / "model.keras")
    with pytest.raises(FileNotFoundError):
        LRPExplainer(trained["dir"] / "missing.h5")


def test_worker_load_failure_is_reported(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(RuntimeError, match="could not load"):
        lrp(bad, np.zeros((1, 16, 16, 1), np.float32))

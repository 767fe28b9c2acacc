import numpy as np
import pytest

from cxrlib.explain.gradcam import CamExplainer, gradcam, resolve_classes, target_layer
from cxrlib.explain.scoring import mass_inside


def _quadrant(size, q):
    m = np.zeros((size, size), bool)
    h = size // 2
    r, c = divmod(q, 2)
    m[r * h:(r + 1) * h, c * h:(c + 1) * h] = True
    return m


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_quadrant_model_mass_in_the_quadrant_it_reads(quad_model, method):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(4, 32, 32, 1)).astype(np.float32)  # content everywhere
    tl, br = _quadrant(32, 0), _quadrant(32, 3)
    for cls, quad in ((0, tl), (1, br)):
        maps = gradcam(quad_model, images, class_index=cls, method=method, layer="conv")
        assert maps.shape == (4, 32, 32)
        for m in maps:
            assert mass_inside(m, quad) > 0.85, (cls, mass_inside(m, quad))


def test_predicted_class_is_explained_by_default(quad_model):
    img = np.full((2, 32, 32, 1), 0.2, np.float32)
    img[0, :16, :16] = 1.0  # bright top-left -> class 0
    img[1, 16:, 16:] = 1.0  # bright bottom-right -> class 1
    res = CamExplainer(quad_model, "gradcam", layer="conv").explain(img)
    assert res.class_index.tolist() == [0, 1]
    assert mass_inside(res.maps[0], _quadrant(32, 0)) > 0.85
    assert mass_inside(res.maps[1], _quadrant(32, 3)) > 0.85
    assert np.allclose(res.scores, quad_model.predict(img, verbose=0).max(axis=1), atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_densenet_maps_finite_input_size_normalised(densenet_model, method):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 64, 64, 3)).astype(np.float32)
    res = CamExplainer(densenet_model, method).explain(images, class_index=[0, 1, 2])
    assert res.maps.shape == (3, 64, 64) and res.maps.dtype == np.float32
    assert np.isfinite(res.maps).all()
    assert res.maps.min() >= 0 and res.maps.max() <= 1
    assert res.class_index.tolist() == [0, 1, 2]


def test_auto_layer_is_a_spatial_layer(densenet_model):
    name = target_layer(densenet_model)
    assert len(densenet_model.get_layer(name).output.shape) == 4


def test_bad_layer_and_nested_model_errors(quad_model):
    from tensorflow import keras

    with pytest.raises(ValueError, match="not in model"):
        target_layer(quad_model, "nope")
    with pytest.raises(ValueError, match="4-D"):
        target_layer(quad_model, "head")
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)])
    inp = keras.Input((8, 8, 1))
    nested = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inner(inp))))
    with pytest.raises(ValueError, match="flat"):
        target_layer(nested)


def test_resolve_classes_and_bad_input(quad_model):
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert resolve_classes(probs, None).tolist() == [1, 0]
    assert resolve_classes(probs, 1).tolist() == [1, 1]
    with pytest.raises(ValueError, match="outside"):
        resolve_classes(probs, 2)
    with pytest.raises(ValueError, match="do not fit"):
        gradcam(quad_model, np.zeros((1, 16, 16, 1), np.float32), layer="conv")


@pytest.mark.parametrize("backbone,activation", [("plain_cnn", "softmax"), ("compact_densenet", "sigmoid")])
def test_cxrlib_models_softmax_and_sigmoid_heads(backbone, activation):
    from cxrlib.models import build_model, last_conv_layer_name

    model = build_model(backbone, (32, 32, 3), 4 if activation == "softmax" else 14, activation)
    x = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    ex = CamExplainer(model, "gradcam++")
    assert ex.layer == last_conv_layer_name(model)
    res = ex.explain(x, class_index=[1, 3])
    assert res.maps.shape == (2, 32, 32) and np.isfinite(res.maps).all()
    assert model.layers[-1].activation.__name__ == activation  # the caller's model keeps its head

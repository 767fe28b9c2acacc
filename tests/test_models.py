"""Model builders: flat graphs, head naming, last conv layer, weights handling."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow import keras

from cxrlib import models


@pytest.mark.parametrize("backbone,last_conv", [
    ("compact_densenet", "relu"),
    ("plain_cnn", "block4_relu"),
    ("vgg16", "block5_conv3"),
    ("resnet50", "conv5_block3_out"),
    ("densenet121", "relu"),
])
def test_build_is_flat_with_named_head(backbone, last_conv):
    m = models.build_model(backbone, (32, 32, 3), 4, "softmax")
    # flat: no nested Model layer, so Grad-CAM can reach the backbone's layers
    assert not any(isinstance(layer, keras.Model) for layer in m.layers)
    assert [layer.name for layer in m.layers[-3:]] == list(models.HEAD_LAYERS)
    assert m.output_shape == (None, 4)
    assert m.get_layer("head").activation is keras.activations.softmax
    assert models.last_conv_layer_name(m) == last_conv
    # the last conv layer is reachable from the model input in one graph
    sub = keras.Model(m.input, [m.get_layer(last_conv).output, m.output])
    assert len(sub.outputs) == 2
    blocks = models.layer_blocks(m)
    assert len(blocks) >= 4
    names = [layer.name for _, layers in blocks for layer in layers]
    assert "head" not in names and len(names) == len(set(names))


def test_compact_densenet_is_small_and_sigmoid_head():
    m = models.build_model("compact_densenet", (32, 32, 1), 14, "sigmoid")
    assert 200_000 < m.count_params() < 800_000
    assert m.get_layer("head").activation is keras.activations.sigmoid
    bns = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == 0.9 for layer in bns)  # small-data default (see build_model)
    x = np.zeros((2, 32, 32, 1), np.float32)
    y = m(x, training=False).numpy()
    assert y.shape == (2, 14) and ((y > 0) & (y < 1)).all()


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unknown backbone"):
        models.build_model("alexnet", (32, 32, 3), 3)
    with pytest.raises(ValueError, match="at least 32x32"):
        models.build_model("compact_densenet", (16, 16, 3), 3)
    with pytest.raises(ValueError, match="softmax"):
        models.build_model("plain_cnn", (32, 32, 3), 3, activation="relu")


def test_imagenet_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("CXR_NO_DOWNLOAD", "1")
    with pytest.raises(models.ImageNetWeightsUnavailable) as err:
        models.build_model("densenet121", (32, 32, 1), 3, weights="imagenet")
    msg = str(err.value)
    expected = tmp_path / "models" / "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert str(expected) in msg and "weights=None" in msg
    with pytest.raises(models.ImageNetWeightsUnavailable, match="no ImageNet weights"):
        models.build_model("compact_densenet", (32, 32, 3), 3, weights="imagenet")


def test_weights_from_earlier_stage_file_skip_the_head(tmp_path):
    src = models.build_model("plain_cnn", (32, 32, 3), 14, "sigmoid")
    path = models.save_model(src, tmp_path / "model.h5")
    dst = models.build_model("plain_cnn", (32, 32, 3), 3, "softmax", weights=path)
    for name in ("block1_conv", "block4_conv", "block2_bn"):
        for a, b in zip(src.get_layer(name).get_weights(), dst.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert dst.get_layer("head").get_weights()[0].shape == (128, 3)
    loaded = models.load_model(path)
    assert loaded.get_layer("block2_bn").momentum == 0.9
    np.testing.assert_array_equal(loaded.get_layer("head").get_weights()[0],
                                  src.get_layer("head").get_weights()[0])
    with pytest.raises(FileNotFoundError):
        models.build_model("plain_cnn", (32, 32, 3), 3, weights=tmp_path / "missing.h5")


@pytest.mark.slow
def test_imagenet_path_with_gray_input_uses_the_cached_file(tmp_path, monkeypatch):
    """The real keras.applications ImageNet code path, fed a stand-in weights file placed where
    keras caches it (no network): a 1-channel input gets the parameter-free gray_to_rgb layer
    and the backbone receives the file's weights."""
    from keras.src.utils import data_utils

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    stand_in = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(32, 32, 3))
    k = stand_in.get_layer("conv1/conv").get_weights()[0]
    stand_in.get_layer("conv1/conv").set_weights([np.full_like(k, 0.125)])
    path = models.imagenet_weights_file("densenet121")
    path.parent.mkdir(parents=True)
    stand_in.save_weights(str(path))
    # keras verifies a hash of the real file; the stand-in is served from the cache path instead
    monkeypatch.setattr(data_utils, "get_file", lambda fname, *a, **kw: str(path.parent / fname))
    m = models.build_model("densenet121", (32, 32, 1), 3, weights="imagenet")
    assert m.get_layer("gray_to_rgb").output_shape == (None, 32, 32, 3)
    assert (m.get_layer("conv1/conv").get_weights()[0] == 0.125).all()
    assert not any(isinstance(layer, keras.Model) for layer in m.layers)  # still flat

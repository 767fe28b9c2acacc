"""Tiny hand-built and trained models shared by the explain tests (32 px, CPU-friendly)."""

from __future__ import annotations

import numpy as np
import pytest


def quadrant_model(size: int = 32):
    """A model whose class 0 reads only the top-left quadrant and class 1 only the bottom-right.

    Layers: input [S,S,1] -> QuadrantSplit [S,S,4] (channel q = image * quadrant q mask) ->
    Conv2D 'conv' (3x3, stride 2, per-channel mean, ReLU) [S/2,S/2,4] -> GAP [4] ->
    Dense(2, softmax): logit 0 = 10 * mean(top-left), logit 1 = 10 * mean(bottom-right).
    """
    import tensorflow as tf
    from tensorflow import keras

    class QuadrantSplit(keras.layers.Layer):
        def call(self, x):  # x: [B, H, W, 1]
            h, w = x.shape[1], x.shape[2]
            r = tf.range(h)[:, None] < h // 2  # [H, 1] top half
            c = tf.range(w)[None, :] < w // 2  # [1, W] left half
            quads = [r & c, r & ~c, ~r & c, ~r & ~c]  # TL, TR, BL, BR, each [H, W]
            m = tf.cast(tf.stack(quads, axis=-1), x.dtype)  # [H, W, 4]
            return x * m[None]  # [B, H, W, 4]

    inp = keras.Input((size, size, 1))
    x = QuadrantSplit(name="split")(inp)
    conv = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv")
    x = conv(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    head = keras.layers.Dense(2, activation="softmax", name="head")
    out = head(x)
    model = keras.Model(inp, out, name="quadrant")
    k = np.zeros((3, 3, 4, 4), np.float32)
    for i in range(4):
        k[:, :, i, i] = 1.0 / 9.0
    conv.set_weights([k, np.zeros(4, np.float32)])
    w = np.zeros((4, 2), np.float32)
    w[0, 0] = 10.0  # class 0 <- top-left channel
    w[3, 1] = 10.0  # class 1 <- bottom-right channel
    head.set_weights([w, np.zeros(2, np.float32)])
    return model


@pytest.fixture(scope="session")
def quad_model():
    return quadrant_model()


def tiny_densenet(size: int = 64, n_outputs: int = 3, seed: int = 0):
    """A flat compact DenseNet (keras.applications DenseNet builder, blocks [1, 1, 1, 1]) + softmax head."""
    from tensorflow import keras
    from keras.src.applications.densenet import DenseNet

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3))
    base = DenseNet([1, 1, 1, 1], include_top=False, weights=None, input_tensor=inp)
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    out = keras.layers.Dense(n_outputs, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="tiny_densenet")


@pytest.fixture(scope="session")
def densenet_model():
    return tiny_densenet()

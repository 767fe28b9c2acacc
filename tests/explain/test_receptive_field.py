"""Cell centres of a feature map against the receptive field itself (issue 11 item 2).

The receptive field of cell (i, j) is the support of its gradient with respect to the input;
in a network without nonlinearities that support is exact, so its middle is the centre
:func:`cxrlib.explain.receptive_field.cell_centres` must find. The half-pixel assumption
(cell i at the middle of its block of pixels) is wrong for keras' DenseNet stem by 1.5 px at
4-pixel cells, which is what moved the demo's Grad-CAM peaks off 10-px lesions.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from cxrlib.explain.gradcam import upsample_cam
from cxrlib.explain.receptive_field import cell_centres, half_pixel


def _support(model, layer: str, cell: tuple[int, int], n_inputs: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns where the cell's channel sum has a non-zero input gradient (any of n inputs)."""
    sub = keras.Model(model.input, model.get_layer(layer).output)
    x = tf.Variable(np.random.default_rng(0).uniform(-1, 1, (n_inputs, *model.input_shape[1:])).astype("float32"))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(sub(x, training=False)[:, cell[0], cell[1], :])
    g = np.abs(tape.gradient(total, x).numpy()).sum(axis=(0, 3))  # [H, W]
    return np.nonzero(g.sum(1))[0], np.nonzero(g.sum(0))[0]


def _support_middle(model, layer: str, cell: tuple[int, int], n_inputs: int = 4) -> tuple[float, float]:
    rows, cols = _support(model, layer, cell, n_inputs)
    return (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2


def _linear(size: int, layers) -> keras.Model:
    inp = keras.Input((size, size, 1))
    x = inp
    for lay in layers:
        x = lay(x)
    return keras.Model(inp, x)


CASES = {
    "conv valid stride 2": lambda: [keras.layers.Conv2D(2, 3, strides=2)],
    "conv same stride 2, even input": lambda: [keras.layers.Conv2D(2, 4, strides=2, padding="same")],
    "densenet-like stem": lambda: [keras.layers.ZeroPadding2D(3), keras.layers.Conv2D(2, 7, strides=2),
                                   keras.layers.ZeroPadding2D(1), keras.layers.MaxPooling2D(3, strides=2)],
    "vgg-like": lambda: [keras.layers.Conv2D(2, 3, padding="same"), keras.layers.AveragePooling2D(2),
                         keras.layers.Conv2D(2, 3, padding="same"), keras.layers.AveragePooling2D(2)],
    "dilated, cropped, same stride 3": lambda: [keras.layers.Conv2D(2, 3, dilation_rate=2, padding="same"),
                                                keras.layers.Cropping2D(((2, 0), (1, 3))),
                                                keras.layers.Conv2D(2, 5, strides=3, padding="same")],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cell_centres_are_the_middle_of_the_receptive_field(case):
    tf.keras.utils.set_random_seed(0)
    model = _linear(41, CASES[case]())  # no nonlinearity: the gradient's support is the receptive field
    layer = model.layers[-1].name
    (oy, sy), (ox, sx) = cell_centres(model, layer)
    h, w = model.output_shape[1:3]
    cells = [(i, j) for i in range(h) for j in range(w)]
    supports = [_support(model, layer, cell, n_inputs=16) for cell in cells]  # 16 inputs: every max-pool tap wins
    full = max(r[-1] - r[0] for r, _ in supports), max(c[-1] - c[0] for _, c in supports)
    checked = 0
    for cell, (rows, cols) in zip(cells, supports):
        if (rows[-1] - rows[0], cols[-1] - cols[0]) != full:
            continue  # receptive field cut by the image border or by padding: its middle is not the centre
        middle = ((rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2)
        assert middle == pytest.approx((oy + sy * cell[0], ox + sx * cell[1])), (case, cell)
        checked += 1
    assert checked >= 4, case


def test_compact_densenet_cells_are_centred_on_4i_not_on_their_pixel_blocks():
    """keras' DenseNet stem centres cell i of the /4 grid on pixel 4 i (the half-pixel
    assumption says 4 i + 1.5); checked on the demo backbone with its ReLUs and BatchNorms."""
    from cxrlib.models import build_model

    tf.keras.utils.set_random_seed(0)
    model = build_model("compact_densenet", (48, 48, 3), 3, "softmax", compact_blocks=(4,))
    assert cell_centres(model, "relu") == ((0.0, 4.0), (0.0, 4.0))
    assert half_pixel(12, 48) == (1.5, 4.0)
    assert _support_middle(model, "relu", (6, 6), n_inputs=8) == (24.0, 24.0)


def test_unknown_geometry_gives_none():
    model = _linear(16, [keras.layers.Conv2D(2, 3, strides=2), keras.layers.UpSampling2D(2)])
    assert cell_centres(model, model.layers[-1].name) is None
    inp = keras.Input((16, 16, 1))  # two branches on different grids merged
    a = keras.layers.Conv2D(2, 3, padding="same")(inp)
    b = keras.layers.Conv2D(2, 3)(keras.layers.ZeroPadding2D(((2, 0), (2, 0)))(inp))
    merged = keras.Model(inp, keras.layers.Add()([a, b]))
    assert cell_centres(merged, merged.layers[-1].name) is None


@pytest.mark.parametrize("shape", [(6, 6, 48, 48), (5, 7, 40, 33), (12, 12, 48, 48)])
def test_default_upsampling_is_tf_resize_half_pixel(shape):
    h, w, H, W = shape
    cam = np.random.default_rng(1).uniform(0, 1, (2, h, w)).astype(np.float32)
    ref = tf.image.resize(cam[..., None], (H, W), method="bilinear").numpy()[..., 0]
    ref = (ref - ref.min(axis=(1, 2), keepdims=True)) / np.ptp(ref, axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(upsample_cam(cam, (H, W)), ref, atol=1e-5)


def test_upsampling_puts_each_cell_on_its_centre():
    cam = np.zeros((1, 12, 12), np.float32)
    cam[0, 5, 7] = 1.0
    up = upsample_cam(cam, (48, 48), ((0.0, 4.0), (0.0, 4.0)))[0]
    assert np.argwhere(up == 1.0).tolist() == [[20, 28]]
    up = upsample_cam(cam, (48, 48))[0]  # half-pixel: the peak at 21.5 -> pixels 21 and 22
    assert np.argwhere(up == up.max()).min(0).tolist() == [21, 29]

"""Random training augmentation of chest radiographs, per element, reproducible from a seed.

Applied by :func:`cxrlib.data.pipeline.make_dataset` to float 0..255 images ``[H, W, C]`` after
the cache and before the backbone's ``preprocess_input``, so every epoch sees fresh draws and one
cache serves every backbone. Small rotation, shift, zoom (one projective transform, black
outside the source like the pad borders), brightness and contrast, with stateless random ops
seeded per element (different in every epoch, identical across runs with the same seed).

**Horizontal flip is off by default**: a chest radiograph is not left-right symmetric (heart,
aortic knob and gastric bubble on the left; situs inversus/dextrocardia is itself a finding), and
burnt-in L/R markers would be mirrored into text that never occurs. Used for the training stages of
both papers' reproductions (Basu et al. 2020, arXiv 2004.10507; Bassi & Attux 2020, arXiv
2005.01578) when a stage sets ``augment``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cxrlib import runtime  # noqa: F401  (TF environment defaults before TF is imported)

import tensorflow as tf  # noqa: E402


@dataclass(frozen=True)
class Augmentation:
    """Random training augmentation, applied to 0..255 images before ``preprocess_input``.

    Attributes:
        rotation: maximum rotation in degrees (uniform in +-rotation).
        shift: maximum shift as a fraction of height/width.
        zoom: maximum zoom as a fraction (scale uniform in 1 +- zoom).
        brightness: maximum brightness change as a fraction of 255.
        contrast: contrast factor uniform in 1 +- contrast.
        horizontal_flip: random left-right flip; off by default because chest anatomy
            is not mirror symmetric and L/R markers would be mirrored (module docstring).
    """

    rotation: float = 10.0
    shift: float = 0.05
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    horizontal_flip: bool = False


def as_augmentation(augment) -> Augmentation | None:
    """``make_dataset``'s ``augment`` argument (False/None, True, a dict of fields or one) as an Augmentation."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return Augmentation()
    if isinstance(augment, Augmentation):
        return augment
    if isinstance(augment, dict):
        return Augmentation(**augment)
    raise TypeError(f"augment must be bool, dict or Augmentation, got {type(augment).__name__}")


def _affine_transform(angle, scale, tx, ty, h: int, w: int) -> tf.Tensor:
    """Projective-transform vector (output -> input pixel) of rotate/zoom/shift about the centre.

    Forward map: out = scale * R(angle) (in - c) + c + t, so in = R(-angle) (out - c - t) / scale + c.
    """
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1, b0, b1 = cos, sin, -sin, cos
    ox, oy = cx + tx, cy + ty
    a2 = cx - (a0 * ox + a1 * oy)
    b2 = cy - (b0 * ox + b1 * oy)
    zero = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero])  # [8]


def augment_image(x: tf.Tensor, seed: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """Apply :class:`Augmentation` to one float ``[H, W, C]`` 0..255 image.

    Args:
        x: image with static height and width.
        seed: int ``[2]`` stateless seed for this element.
        aug: the augmentation ranges.
    """
    h, w = int(x.shape[0]), int(x.shape[1])
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    u = lambda i, lo, hi, shape=(): tf.random.stateless_uniform(shape, s[i], lo, hi)  # noqa: E731
    angle = u(0, -aug.rotation, aug.rotation) * (math.pi / 180.0)
    scale = u(1, 1.0 - aug.zoom, 1.0 + aug.zoom)
    shift = u(2, -aug.shift, aug.shift, (2,)) * tf.constant([w, h], tf.float32)
    t = _affine_transform(angle, scale, shift[0], shift[1], h, w)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x[None], transforms=t[None], output_shape=tf.constant([h, w]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )[0]  # [H, W, C], black outside the source like the pad borders
    if aug.brightness:
        x = x + u(3, -aug.brightness, aug.brightness) * 255.0
    if aug.contrast:
        x = tf.image.stateless_random_contrast(x, 1.0 - aug.contrast, 1.0 + aug.contrast, s[4])
    if aug.horizontal_flip:
        x = tf.image.stateless_random_flip_left_right(x, s[5])
    return tf.clip_by_value(x, 0.0, 255.0)

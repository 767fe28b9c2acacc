"""Decode + channel planes + resize of one image file, in-graph (the first steps of the pipeline).

What :mod:`cxrlib.data.pipeline` and :mod:`cxrlib.data.cache` share, so training, the cache and
heatmaps (``load_images``) see exactly the same pixels; see the pipeline's docstring for why
each step is done this way (16-bit PNGs, JPEG DCT scaling, alpha, luma, antialiased resize).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cxrlib import runtime  # noqa: F401  (TF environment defaults before TF is imported)
from cxrlib.data import images as cxr_images

import tensorflow as tf  # noqa: E402

RESIZE_MODES = ("pad", "crop", "stretch")
# libjpeg's accurate integer IDCT (what PIL uses); TF's default INTEGER_FAST differs from PIL
# by ~10 grey levels on fine texture.
_JPEG_DCT = "INTEGER_ACCURATE"


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


def _pil_fallback(path: np.ndarray) -> np.ndarray:
    with open(path.decode() if isinstance(path, bytes) else str(path), "rb") as f:
        return cxr_images.decode_bytes(f.read())


def _decode_jpeg_scaled(data: tf.Tensor, min_side: int) -> tf.Tensor:
    """Decode a JPEG with the largest DCT scaling (1, 2, 4, 8) that keeps >= 2*min_side px."""
    hw = tf.io.extract_jpeg_shape(data)[:2]
    short = tf.reduce_min(hw)
    # ratio index: 0 -> 1, 1 -> 2, 2 -> 4, 3 -> 8
    idx = tf.reduce_sum(tf.cast(short // tf.constant([2, 4, 8]) >= 2 * min_side, tf.int32))
    branches = [lambda r=r: tf.io.decode_jpeg(data, channels=0, ratio=r, dct_method=_JPEG_DCT)
                for r in (1, 2, 4, 8)]
    return tf.switch_case(idx, branches)


def decode_image(path: tf.Tensor, decoder: tf.Tensor, min_side: int = 0) -> tf.Tensor:
    """Decode one file in-graph to float32 ``[H, W, C]`` in 0..255, native channels (1..4).

    Args:
        path: scalar string tensor, the file.
        decoder: scalar int tensor, ``images.DECODER_PNG|JPEG|PIL`` (see
            :func:`cxrlib.data.images.probe_decoders`).
        min_side: the smallest side the caller will resize to (enables JPEG DCT scaling;
            0 decodes at full resolution).
    """

    def png():
        data = tf.io.read_file(path)
        # IHDR bit depth is byte 24; decoding 8-bit PNGs as uint8 is ~15% faster
        is16 = tf.strings.substr(data, 24, 1) == b"\x10"
        return tf.cond(
            is16,
            lambda: tf.cast(tf.io.decode_png(data, channels=0, dtype=tf.uint16), tf.float32) / 257.0,
            lambda: tf.cast(tf.io.decode_png(data, channels=0), tf.float32),
        )

    def jpeg():
        data = tf.io.read_file(path)
        if min_side > 0:
            x = _decode_jpeg_scaled(data, min_side)
        else:
            x = tf.io.decode_jpeg(data, channels=0, dct_method=_JPEG_DCT)
        return tf.cast(x, tf.float32)

    def pil():
        return tf.numpy_function(_pil_fallback, [path], tf.float32, stateful=False)

    x = tf.switch_case(tf.cast(decoder, tf.int32), [png, jpeg, pil])
    x.set_shape([None, None, None])
    return x


def color_planes(x: tf.Tensor, channels: int) -> tf.Tensor:
    """``[H, W, C0]`` (C0 in 1..4) -> gray ``[H, W, 1]`` or its colour planes (1 or 3).

    Drops alpha (RGBA -> RGB, LA -> L) and, for ``channels=1``, turns RGB into luma. Gray is
    not yet replicated, so a following resize works on one plane instead of three.

    Args:
        x: float image.
        channels: 1 or 3, the final channel count.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if x.shape[-1] == 1 or (x.shape[-1] == 3 and channels == 3):
        return x  # already colour planes (static shape)
    c0 = tf.shape(x)[-1]
    n_color = tf.where(c0 >= 3, 3, 1)
    x = x[..., :n_color]  # drop alpha: RGBA -> RGB, LA -> L
    if channels == 1:
        x = tf.cond(n_color == 3, lambda: tf.image.rgb_to_grayscale(x), lambda: x)
        x.set_shape([None, None, 1])
    return x


def convert_channels(x: tf.Tensor, channels: int) -> tf.Tensor:
    """``[H, W, C0]`` (C0 in 1..4) -> ``[H, W, channels]``: drop alpha, gray<->RGB.

    Args:
        x: float image.
        channels: 1 or 3.
    """
    x = color_planes(x, channels)
    if channels == 3 and x.shape[-1] == 1:
        x = tf.repeat(x, 3, axis=-1)
    elif channels == 3 and x.shape[-1] is None:
        x = tf.cond(tf.shape(x)[-1] == 1, lambda: tf.repeat(x, 3, axis=-1), lambda: x)
    x.set_shape([None, None, channels])
    return x


def resize_image(x: tf.Tensor, image_size: int | Sequence[int], resize_mode: str = "pad") -> tf.Tensor:
    """Resize ``[H, W, C]`` to ``image_size`` with antialiased bilinear interpolation.

    Args:
        x: float image.
        image_size: output side (square) or ``(height, width)``.
        resize_mode: ``pad`` (keep aspect, black borders), ``crop`` (centred crop to the
            target aspect) or ``stretch``.
    """
    th, tw = _size_hw(image_size)
    if resize_mode == "pad":
        y = tf.image.resize_with_pad(x, th, tw, antialias=True)
    elif resize_mode == "crop":
        h, w = tf.shape(x)[0], tf.shape(x)[1]
        # largest centred crop with aspect tw/th: [ch, cw]
        ch = tf.minimum(h, tf.cast(tf.round(tf.cast(w, tf.float32) * th / tw), tf.int32))
        cw = tf.minimum(w, tf.cast(tf.round(tf.cast(h, tf.float32) * tw / th), tf.int32))
        x = tf.image.crop_to_bounding_box(x, (h - ch) // 2, (w - cw) // 2, ch, cw)
        y = tf.image.resize(x, [th, tw], antialias=True)
    elif resize_mode == "stretch":
        y = tf.image.resize(x, [th, tw], antialias=True)
    else:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    return tf.clip_by_value(y, 0.0, 255.0)


def load_resized(path, decoder, image_size, channels: int = 3, resize_mode: str = "pad") -> tf.Tensor:
    """Decode + channel conversion + resize of one file: float32 ``[H, W, C]`` in 0..255.

    This is the single decode/resize path shared by :func:`make_dataset` and
    :func:`load_images` (so heatmaps see exactly what the model sees).
    """
    th, tw = _size_hw(image_size)
    x = decode_image(path, decoder, min_side=max(th, tw))  # [h, w, 1..4]
    x = color_planes(x, channels)  # [h, w, 1 or 3]; resize is linear, so it commutes with
    x = resize_image(x, (th, tw), resize_mode)  # the gray -> RGB replication done after it
    return convert_channels(x, channels)  # [th, tw, channels]

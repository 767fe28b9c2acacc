"""tf.data input pipeline: manifest rows -> (images, targets) batches for Keras.

Order of the steps, and why::

    paths --read+decode (TF in-graph; PIL fallback)--> planes --resize (pad|crop|stretch)-->
      quantise to uint8 (uint16 for 16-bit sources), one plane for gray sets -->
      [cache: memory or disk, cxrlib.data.cache] --shuffle (seeded; of row indices when cached)-->
      float 0..255, gray -> RGB --[augment (per-element stateless random ops)]-->
      batch --backbone preprocess_input --prefetch(AUTOTUNE)

Decode and resize live in :mod:`cxrlib.data.decode`, the cache in :mod:`cxrlib.data.cache`,
the random training augmentation in :mod:`cxrlib.data.augment`.

* Decoding: PNG with ``tf.io.decode_png``; 16-bit PNGs (IHDR bit depth) with
  ``dtype=tf.uint16``, scaled by 1/257 to float 0..255 so they keep their precision
  (``tf.io.decode_image`` would squash them to 8 bits); JPEG with ``tf.io.decode_jpeg`` (L,
  RGB, CMYK; accurate IDCT, as PIL), using libjpeg's DCT-domain downscaling (``ratio``
  2/4/8) when the image is at least twice as large as needed (an area-averaging
  downsample; measured: a 2,836 px JPEG decodes ~2x faster at ratio 8, less at 2/4, as
  entropy decoding dominates, and the resize that follows is much cheaper). Any other format PIL
  reads (BMP, GIF, TIFF, WebP; chosen by magic bytes, not by extension) goes through
  ``tf.numpy_function`` + :func:`cxrlib.data.images.decode_bytes`. Nothing is dropped: with
  ``check=True`` every image is decoded once by :func:`cxrlib.data.images.scan_images` and
  the run stops with the list of bad paths before the first batch.
* Channels: alpha dropped (RGBA -> RGB, LA -> L; see :mod:`cxrlib.data.images`), gray ->
  RGB by replication, RGB -> gray by ITU-R 601-2 luma.
* Resize (antialiased bilinear): ``pad`` keeps the aspect ratio and pads with black
  (``tf.image.resize_with_pad``); ``crop`` takes the largest centred crop of the target's
  aspect ratio; ``stretch`` ignores the aspect ratio (what ``keras.utils.load_img(
  target_size=...)`` does).
* Cache: after decode/resize/quantisation, before shuffle/augment/float/preprocess, so random
  augmentation is fresh every epoch and one cache serves every backbone. The uncached pipeline
  quantises the same way, so cached and uncached tensors are identical. On-disk caches are keyed
  by a fingerprint of the files (path, size, mtime) and the geometry, so a stale cache is never
  read for changed images or a different size.
* Augmentation (training only, off by default; :mod:`cxrlib.data.augment`): small rotation,
  shift, zoom, brightness and contrast, seeded per element; horizontal flip off (chest anatomy
  and L/R markers are not mirror symmetric).

Memory: a memory cache holds N x H x W x planes bytes (planes 1 for gray sets; x2 for 16-bit
sources): the 112,120 NIH images at 224 px are 5.6 GB. It is refused before decoding when it does
not fit the available memory (:class:`cxrlib.data.cache.CacheTooLarge`, naming the on-disk
alternative); an on-disk cache streams, and the shuffle runs over row indices (no image buffer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cxrlib import runtime  # noqa: F401  (TF environment defaults before TF is imported)
from cxrlib.data import cache as cxr_cache
from cxrlib.data import images as cxr_images
from cxrlib.data.augment import Augmentation, augment_image, as_augmentation  # noqa: F401  (kept importable here)
from cxrlib.data.decode import (  # noqa: F401  (public names of the pipeline, kept importable here)
    RESIZE_MODES, _size_hw, color_planes, convert_channels, decode_image, load_resized, resize_image,
)
from cxrlib.data.manifest import ManifestError, Problem, line_of, split_findings
from cxrlib.data.taxonomy import NO_FINDING

import tensorflow as tf  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE
SCAN_MEMO = "scan-ok.tsv"  # in an on-disk cache folder: files the bad-image scan found good

# backbone name -> keras.applications module whose preprocess_input it needs (None: x/255)
BACKBONE_PREPROCESS: dict[str, str | None] = {
    "densenet121": "densenet",  # 'torch' mode: /255, ImageNet mean/std
    "densenet169": "densenet",
    "densenet201": "densenet",
    "compact_densenet": "densenet",
    "vgg16": "vgg16",  # 'caffe' mode: RGB->BGR, ImageNet mean subtracted, 0..255 scale
    "vgg19": "vgg19",
    "resnet50": "resnet50",
    "inception_v3": "inception_v3",  # 'tf' mode: -1..1
    "xception": "xception",
    "mobilenet_v2": "mobilenet_v2",
    "plain_cnn": None,  # 0..1
}


# ----------------------------------------------------------------------------- preprocess
def preprocess_for(backbone: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The input normalisation a backbone was trained with, as a function of images.

    Args:
        backbone: one of :data:`BACKBONE_PREPROCESS` (``densenet121``, ``densenet201``,
            ``compact_densenet``, ``vgg16``, ``resnet50``, ``plain_cnn``, ...).

    Returns:
        ``f(x)`` for float32 ``[..., H, W, C]`` images in 0..255. For 1-channel images the
        3-channel normalisation is applied to the replicated gray plane and averaged back
        to one channel.
    """
    key = backbone.strip().lower()
    if key not in BACKBONE_PREPROCESS:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(sorted(BACKBONE_PREPROCESS))}")
    module = BACKBONE_PREPROCESS[key]
    if module is None:
        return lambda x: tf.cast(x, tf.float32) / 255.0
    keras_fn = getattr(tf.keras.applications, module).preprocess_input

    def preprocess(x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        if x.shape[-1] == 1:  # [..., H, W, 1] -> [..., H, W, 3] -> normalise -> mean
            return tf.reduce_mean(keras_fn(tf.repeat(x, 3, axis=-1)), axis=-1, keepdims=True)
        return keras_fn(x)

    preprocess.__name__ = f"preprocess_{key}"
    return preprocess


# ----------------------------------------------------------------------------- targets
def _manifest_name(df: pd.DataFrame) -> str:
    return df.attrs.get("manifest_path", "manifest")


def encode_targets(
    df: pd.DataFrame, classes: Sequence[str], multi_label: bool = False, unknown: str = "error"
) -> np.ndarray:
    """Target matrix of a manifest: one-hot from ``label`` or multi-hot from ``findings``.

    Args:
        df: manifest table.
        classes: class names in output-neuron order (e.g. ``task_classes("paper_a")``).
        multi_label: multi-hot over ``classes`` from the ``|``-separated ``findings``
            (``No Finding`` -> all zeros) instead of one-hot from ``label``.
        unknown: multi-label only: a finding outside ``classes`` raises (``'error'``) or is
            left out of the target (``'ignore'``).

    Returns:
        float32 ``[N, K]``.

    Raises:
        ManifestError: a label/finding outside ``classes`` or an empty label (single-label),
            naming every offending CSV line.
    """
    classes = list(classes)
    index = {c: k for k, c in enumerate(classes)}
    y = np.zeros((len(df), len(classes)), dtype=np.float32)
    problems: list[Problem] = []
    if multi_label:
        for i, cell in enumerate(df["findings"].tolist()):
            for f in split_findings(cell):
                if f in index:
                    y[i, index[f]] = 1.0
                elif f != NO_FINDING and unknown == "error":
                    problems.append(Problem(line_of(i), "findings", f"finding {f!r} is not one of the {len(classes)} classes"))
    else:
        for i, lab in enumerate(df["label"].tolist()):
            if lab in index:
                y[i, index[lab]] = 1.0
            else:
                msg = "empty label" if lab == "" else f"label {lab!r} is not one of {classes}"
                problems.append(Problem(line_of(i), "label", msg))
    if problems:
        raise ManifestError(_manifest_name(df), problems)
    return y


def class_weights(
    df: pd.DataFrame, classes: Sequence[str], multi_label: bool = False
) -> dict[int, float]:
    """Class weights from a (training) split.

    Single-label: scikit-learn's ``compute_class_weight('balanced')``,
    ``n_samples / (K * count_k)``, for Keras ``fit(class_weight=...)``.
    Multi-label: per-finding positive weights ``n_negative / n_positive`` (the ``w+`` of a
    weighted binary cross-entropy, as in CheXNet); Keras ``class_weight`` does not apply
    to multi-label outputs, so pass these to a weighted loss.

    Args:
        df: manifest rows of the training split.
        classes: class names in output order.
        multi_label: see above.

    Raises:
        ValueError: a class has no (positive) example, so no weight can be defined.
    """
    y = encode_targets(df, classes, multi_label=multi_label)
    counts = y.sum(axis=0)
    absent = [c for c, n in zip(classes, counts) if n == 0]
    if absent:
        raise ValueError(f"no training example of class(es) {absent} in {len(df)} rows; "
                         "cannot weight a class that is absent")
    if multi_label:
        return {k: float((len(y) - n) / n) for k, n in enumerate(counts)}
    from sklearn.utils.class_weight import compute_class_weight

    ks = np.arange(len(classes))
    w = compute_class_weight("balanced", classes=ks, y=y.argmax(axis=1))
    return {int(k): float(v) for k, v in zip(ks, w)}


# ----------------------------------------------------------------------------- datasets
def _file_list(df: pd.DataFrame, root) -> list[str]:
    """Absolute image paths of a manifest."""
    if "path" not in df.columns:
        raise ManifestError(_manifest_name(df), [Problem(1, "path", "required column is missing")])
    return [str(Path(root) / p) for p in df["path"].tolist()]


def _check_images(df: pd.DataFrame, root, memo=None) -> None:
    """Decode every image once and raise BadImageError naming the bad ones."""
    cxr_images.scan_images(df, Path(root), memo=memo).raise_if_bad()


def _rows(paths: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Unique files in first-seen order and each element's row among them (oversampled rows share one)."""
    unique = list(dict.fromkeys(paths))
    row = {p: k for k, p in enumerate(unique)}
    return unique, np.array([row[p] for p in paths], np.int64)


def make_dataset(
    df: pd.DataFrame,
    root: str | os.PathLike,
    classes: Sequence[str],
    image_size: int | Sequence[int] = 64,
    channels: int = 3,
    backbone: str | None = "compact_densenet",
    multi_label: bool = False,
    batch_size: int = 16,
    shuffle: bool = False,
    augment: bool | dict | Augmentation = False,
    cache: str | os.PathLike | None = None,
    resize_mode: str = "pad",
    seed: int = 0,
    check: bool = True,
    shuffle_buffer: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of ``(images, targets)`` for a manifest.

    Args:
        df: manifest rows (e.g. one split).
        root: data root the ``path`` column is relative to.
        classes: output classes in order (``task_classes(task)``).
        image_size: output side in pixels, or ``(height, width)``.
        channels: 3 (RGB, for ImageNet backbones) or 1.
        backbone: which ``preprocess_input`` to apply (:func:`preprocess_for`); None keeps
            raw 0..255 floats.
        multi_label: multi-hot targets over ``classes`` from ``findings`` (sigmoid heads)
            instead of one-hot from ``label`` (softmax heads).
        batch_size: batch size.
        shuffle: reshuffle every epoch (order reproducible from ``seed``).
        augment: False, True (default :class:`Augmentation`), a dict of its fields or one.
        cache: None, ``'memory'``, or a folder for an on-disk cache (``.npy`` files named by a
            fingerprint of the images and geometry; reused by later runs; streams from disk).
            Either is built before the first batch (one decode per file, tqdm bar); a memory
            cache that does not fit the available memory raises
            :class:`cxrlib.data.cache.CacheTooLarge` before anything is decoded.
        resize_mode: ``pad``, ``crop`` or ``stretch`` (:func:`resize_image`).
        seed: seed of the shuffle order and of the augmentation.
        check: decode every image first (:func:`cxrlib.data.images.scan_images`) and raise
            :class:`cxrlib.data.images.BadImageError` naming the bad paths; skipped when a
            complete on-disk cache of exactly these files exists (nothing is decoded then).
            With an on-disk cache folder, files found good are remembered there
            (:data:`SCAN_MEMO`) and not decoded again by later scans. With ``check=False``
            a bad file fails inside TensorFlow mid-epoch, without its path.
        shuffle_buffer: cap of the shuffle buffer of row indices when caching (default: all).
        drop_remainder: drop the last incomplete batch.

    Returns:
        dataset of ``images`` float32 ``[B, H, W, C]`` and ``targets`` float32 ``[B, K]``.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if len(df) == 0:
        raise ValueError(f"{_manifest_name(df)}: no rows to build a dataset from")
    targets = encode_targets(df, classes, multi_label=multi_label)  # [N, K]; raises first
    preprocess = preprocess_for(backbone) if backbone else None
    aug = as_augmentation(augment)
    paths = _file_list(df, root)
    unique, rows = _rows(paths)  # [U] files, [N] element -> file row
    infos = cxr_cache.probe_images(unique)  # decoder route, bit depth, colour: headers only
    spec = cxr_cache.cache_spec(infos, _size_hw(image_size), channels)
    n = len(paths)
    store_file = None
    if cache == "memory":  # refuse before decoding anything
        cxr_cache.check_memory(spec, name=_manifest_name(df))
    elif cache is not None:
        store_file = cxr_cache.cache_file(cache, unique, infos, spec, resize_mode)
    # a complete on-disk cache of these exact files needs no decoding, hence no scan
    if check and not (store_file and store_file.is_file()):
        _check_images(df, root, memo=Path(cache) / SCAN_MEMO if store_file else None)

    if cache is None:
        dec = np.array([infos[r].decoder for r in rows], np.int32)
        b16 = np.array([infos[r].bits == 16 for r in rows])
        ds = tf.data.Dataset.from_tensor_slices((paths, dec, b16, targets))
        if shuffle:  # shuffle file names (cheap, full buffer) before decoding
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        size = _size_hw(image_size)
        ds = ds.map(lambda p, d, b, y: (cxr_cache.stored_image(p, d, b, size, spec.planes, resize_mode, spec.dtype), y),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        if store_file is not None and store_file.is_file():
            store = cxr_cache.DiskStore(store_file)
        else:
            store = cxr_cache.build(unique, infos, spec, resize_mode, path=store_file)
        ds = tf.data.Dataset.from_tensor_slices((rows, targets))
        if shuffle:  # of row indices: a full shuffle that holds no image
            ds = ds.shuffle(min(n, shuffle_buffer or n), seed=seed, reshuffle_each_iteration=True)
        ds = cxr_cache.read_rows(ds, store, spec)
    ds = ds.map(lambda x, y: (cxr_cache.to_float(x, channels), y), num_parallel_calls=AUTOTUNE, deterministic=True)

    if aug is not None:
        # one stateless seed pair per element, new pairs every epoch, reproducible from seed
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: (augment_image(xy[0], s, aug), xy[1]),
            num_parallel_calls=AUTOTUNE, deterministic=True,
        )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if preprocess is not None:
        ds = ds.map(lambda x, y: (preprocess(x), y), num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def load_images(
    df: pd.DataFrame,
    root: str | os.PathLike,
    image_size: int | Sequence[int],
    channels: int = 3,
    backbone: str | None = None,
    resize_mode: str = "pad",
    check: bool = True,
    batch_size: int = 32,
) -> np.ndarray:
    """Images of a manifest as one NumPy array, decoded/resized exactly like :func:`make_dataset`.

    Args:
        df: manifest rows.
        root: data root.
        image_size: output side or ``(height, width)``.
        channels: 1 or 3.
        backbone: apply its ``preprocess_input``; None returns raw float 0..255 (display).
        resize_mode: ``pad``, ``crop`` or ``stretch``.
        check: scan for bad images first (raises naming them).
        batch_size: decode batch size (memory only; no effect on values).

    Returns:
        float32 ``[N, H, W, C]``.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    th, tw = _size_hw(image_size)
    if len(df) == 0:
        return np.zeros((0, th, tw, channels), np.float32)
    preprocess = preprocess_for(backbone) if backbone else None
    paths = _file_list(df, root)
    if check:
        _check_images(df, root)
    infos = cxr_cache.probe_images(paths)
    spec = cxr_cache.cache_spec(infos, (th, tw), channels)
    ds = cxr_cache.stored_dataset(paths, infos, spec, resize_mode)  # what the cache holds
    ds = ds.map(lambda x: cxr_cache.to_float(x, channels)).batch(batch_size)
    if preprocess is not None:
        ds = ds.map(preprocess)
    return np.concatenate([b.numpy() for b in ds], axis=0).astype(np.float32)

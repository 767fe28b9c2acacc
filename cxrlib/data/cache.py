"""Image cache of the input pipeline: what was decoded, at 1 byte per pixel per plane.

The cache sits after decode + resize and before shuffle, augmentation, float conversion,
gray -> RGB replication and ``preprocess_input`` (all of which run per batch, after it), so

* it holds ``uint8`` pixels (``uint16`` only when a source file is 16-bit), one plane for
  grayscale sets (3 only when a file has colour planes and 3 channels are asked for):
  N x H x W x planes bytes. The full NIH ChestX-ray14 set (112,120 images) at 224 px is
  5.6 GB instead of the 67 GB of float32 RGB, at 128 px 1.8 GB;
* values do not depend on the dataset an image sits in: 8-bit sources are rounded to whole
  grey levels even in a ``uint16`` cache (stored x 257), 16-bit sources keep their 65,536 levels;
* cached and uncached pipelines give identical tensors (the uncached one quantises the same way).

Two stores with one interface (``read(i) -> [H, W, planes]``):

* :class:`MemoryStore`: a NumPy array. Before it is built, its size is compared with the
  machine's available memory and refused (:class:`CacheTooLarge`, with the numbers and the
  on-disk alternative) if it does not fit. Pixels decoded for a memory cache are also kept for
  the rest of the process (up to :data:`DECODED_LIMIT` bytes, keyed by file and geometry), so
  the next fold's splits of the same manifest are not decoded again.
* :class:`DiskStore`: one ``.npy`` file per (files, geometry) fingerprint in the cache folder,
  written sequentially (atomically: a crash leaves no half cache) and read back 64 rows per
  call (mapped, gathered, unmapped): memory stays flat in the dataset size, and since the shuffle runs
  over row *indices*, an epoch is a full shuffle without a shuffle buffer of images.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cxrlib.data import decode as D
from PIL import Image

from cxrlib.data.images import DECODER_PIL, DECODER_PNG, _read_head, decoder_for, sniff_format
from cxrlib.io import atomic_path

import tensorflow as tf  # noqa: E402  (after cxrlib.runtime, imported by decode)

CACHE_VERSION = "2"  # bump when the stored pixels change
MEMORY_FRACTION = 0.8  # a memory cache may use at most this share of the available memory


# ----------------------------------------------------------------------------- file headers
@dataclass(frozen=True)
class ImageInfo:
    """What the cache needs to know of a file before decoding it (from its header only)."""

    decoder: int  # DECODER_PNG | DECODER_JPEG | DECODER_PIL
    bits: int  # 8, or 16 for 16-bit sources (kept at 16 bits in the cache)
    color: bool  # colour planes (RGB, RGBA, palette); False for gray / gray+alpha


def probe_info(path: str | os.PathLike) -> ImageInfo:
    """Decoder route, bit depth and colour of one file from its header (PNG: IHDR; others: PIL).

    Unreadable or unrecognised files get the PIL route, 8 bits, colour (their error comes
    from the bad-image scan, which names them).
    """
    try:
        head = _read_head(Path(path), 26)
    except OSError:
        return ImageInfo(DECODER_PIL, 8, True)
    fmt = sniff_format(head)
    if fmt == "PNG" and len(head) >= 26:  # IHDR: byte 24 bit depth, byte 25 colour type
        return ImageInfo(DECODER_PNG, 16 if head[24] == 16 else 8, head[25] in (2, 3, 6))
    try:
        with Image.open(path) as im:  # header only
            mode = im.mode
    except Exception:  # noqa: BLE001 -- reported by the scan
        return ImageInfo(decoder_for(fmt), 8, True)
    bits = 16 if mode.startswith("I") else 8
    return ImageInfo(decoder_for(fmt), bits, mode not in ("L", "LA", "1") and not mode.startswith("I"))


def probe_images(paths: Sequence[str | os.PathLike], workers: int | None = None) -> list[ImageInfo]:
    """:func:`probe_info` of many files (header reads in a thread pool)."""
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    if len(paths) < 64:
        return [probe_info(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(probe_info, paths, chunksize=256))



class CacheTooLarge(MemoryError):
    """A memory cache that does not fit the machine's available memory."""


@dataclass(frozen=True)
class CacheSpec:
    """Shape of the cache: ``n`` images of ``height x width x planes`` ``dtype`` pixels."""

    n: int
    height: int
    width: int
    planes: int  # 1 (gray) or 3
    dtype: str  # 'uint8' or 'uint16'

    @property
    def bytes_per_image(self) -> int:
        return self.height * self.width * self.planes * np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.n * self.bytes_per_image

    def describe(self) -> str:
        return (f"{self.n:,} images x {self.height}x{self.width}x{self.planes} {self.dtype} = "
                f"{self.nbytes / 1e9:.2f} GB")


def cache_spec(infos: Sequence[ImageInfo], image_size: tuple[int, int], channels: int) -> CacheSpec:
    """The cache a set of files needs (from their headers, :func:`probe_images`)."""
    planes = 3 if channels == 3 and any(i.color for i in infos) else 1
    dtype = "uint16" if any(i.bits == 16 for i in infos) else "uint8"
    return CacheSpec(len(infos), int(image_size[0]), int(image_size[1]), planes, dtype)


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``; sysconf fallback)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(spec: CacheSpec, name: str = "manifest", available: int | None = None) -> None:
    """Refuse a memory cache that does not fit, before anything is decoded.

    Raises:
        CacheTooLarge: naming the sizes and the on-disk alternative.
    """
    available = available_memory() if available is None else available
    budget = int(available * MEMORY_FRACTION)
    if spec.nbytes > budget:
        raise CacheTooLarge(
            f"{name}: a memory cache of {spec.describe()} does not fit: {available / 1e9:.2f} GB of memory "
            f"available, {MEMORY_FRACTION:.0%} = {budget / 1e9:.2f} GB allowed. Use an on-disk cache, which "
            f"streams (memory flat in dataset size): make_dataset(cache='/path/to/cache') or "
            f"`--set stage.cache=/path/to/cache`; or lower stage.image_size.")


# ----------------------------------------------------------------------------- pixels
def stored_image(path, decoder, bits16, image_size, planes: int, resize_mode: str, dtype: str) -> tf.Tensor:
    """Decode + planes + resize one file and quantise it: ``[H, W, planes]`` ``dtype`` (graph op).

    Args:
        path, decoder: file and decoder route (:func:`cxrlib.data.decode.decode_image`).
        bits16: bool scalar, the file is 16-bit (kept at 16 bits in a ``uint16`` cache).
        image_size: (height, width).
        planes: 1 or 3.
        resize_mode: ``pad``, ``crop`` or ``stretch``.
        dtype: ``uint8`` or ``uint16``.
    """
    x = D.decode_image(path, decoder, min_side=max(image_size))  # float [h, w, 1..4], 0..255
    x = D.color_planes(x, planes)
    x = D.resize_image(x, image_size, resize_mode)  # float [H, W, 1 or planes], clipped 0..255
    x = D.convert_channels(x, planes)  # [H, W, planes]
    if dtype == "uint8":
        return tf.cast(tf.round(x), tf.uint8)
    y = tf.where(tf.cast(bits16, tf.bool), tf.round(x * 257.0), tf.round(x) * 257.0)
    return tf.cast(tf.clip_by_value(y, 0.0, 65535.0), tf.uint16)


def to_float(x: tf.Tensor, channels: int) -> tf.Tensor:
    """Stored pixels ``[..., H, W, planes]`` -> float32 ``[..., H, W, channels]`` in 0..255."""
    y = tf.cast(x, tf.float32)
    if x.dtype == tf.uint16:
        y = y / 257.0
    if channels == 3 and y.shape[-1] == 1:
        y = tf.repeat(y, 3, axis=-1)
    return y


def stored_dataset(paths: Sequence[str], infos: Sequence[ImageInfo], spec: CacheSpec,
                   resize_mode: str) -> tf.data.Dataset:
    """Dataset of stored pixels of ``paths``, in order (parallel decode)."""
    ds = tf.data.Dataset.from_tensor_slices((list(paths), np.array([i.decoder for i in infos], np.int32),
                                             np.array([i.bits == 16 for i in infos])))
    size = (spec.height, spec.width)
    return ds.map(lambda p, d, b: stored_image(p, d, b, size, spec.planes, resize_mode, spec.dtype),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ----------------------------------------------------------------------------- stores
class MemoryStore:
    """Stored pixels in one NumPy array ``[N, H, W, planes]``."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def read(self, rows) -> np.ndarray:
        """Images of ``rows`` [B] -> [B, H, W, planes]."""
        return self.array[np.asarray(rows, np.int64)]


class DiskStore:
    """Stored pixels in a ``.npy`` file, read a block of rows at a time.

    Each read maps the file, gathers the rows in C (NumPy fancy indexing) and unmaps it again, so
    the pages read never stay in this process's memory (RSS flat in dataset size; the OS page cache
    keeps what fits). Measured on a 16k-image 64 px cache: 11 us per image against 15 us with one
    ``os.pread`` per row, 3 us from a memory array.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = np.lib.format._read_array_header(f, version)
            self.offset = f.tell()
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def read(self, rows) -> np.ndarray:
        """Images of ``rows`` [B] -> [B, H, W, planes]."""
        mm = np.memmap(self.path, self.dtype, "r", offset=self.offset, shape=self.shape)
        try:
            return mm[np.asarray(rows, np.int64)]  # a copy: the mapping is dropped below
        finally:
            del mm


def cache_file(folder, paths: Sequence[str], infos: Sequence[ImageInfo], spec: CacheSpec, resize_mode: str) -> Path:
    """On-disk cache file keyed by the files (path, size, mtime, route) and the geometry."""
    h = hashlib.sha1(f"{CACHE_VERSION}|{spec}|{resize_mode}".encode())
    for p, info in zip(paths, infos):
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}|{info.decoder}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / f"images-{h.hexdigest()[:16]}.npy"


# Pixels of memory caches decoded in this process, by file and geometry (:func:`_decoded_key`).
# The folds of one notebook split the same manifest into other train / validation / test sets;
# from the second fold on, a memory cache is filled from here instead of decoding every file again
# (about 0.3 CPU-s per dataset at 48 px, three datasets per fold). Bounded by DECODED_LIMIT bytes.
_DECODED: dict[tuple, np.ndarray] = {}
_DECODED_BYTES = [0]
DECODED_LIMIT = 512 * 2**20


def _decoded_key(path: str, info: ImageInfo, spec: CacheSpec, resize_mode: str) -> tuple | None:
    """What a stored image depends on: the file (path, size, mtime), its decoder route and bit depth,
    and the cache geometry; None when the file cannot be stat'ed (it is then always decoded)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns, info.decoder, info.bits,
            spec.height, spec.width, spec.planes, spec.dtype, resize_mode)


def _remember(keys: Sequence[tuple | None], rows: Sequence[int], array: np.ndarray) -> None:
    """Keep copies of the freshly decoded ``array[rows]`` for later memory caches, up to the limit."""
    for j in rows:
        if keys[j] is None or _DECODED_BYTES[0] + array[j].nbytes > DECODED_LIMIT:
            continue
        _DECODED[keys[j]] = array[j].copy()
        _DECODED_BYTES[0] += array[j].nbytes


def clear_decoded() -> None:
    """Forget the decoded pixels kept for memory caches (:func:`build`)."""
    _DECODED.clear()
    _DECODED_BYTES[0] = 0


def build(paths: Sequence[str], infos: Sequence[ImageInfo], spec: CacheSpec, resize_mode: str,
          path: str | os.PathLike | None = None, progress: bool | None = None, batch: int = 64):
    """Decode every file once into a store: a :class:`DiskStore` at ``path``, else in memory.

    The disk file is written sequentially under a temporary name and renamed when complete. A
    memory store takes the files this process decoded before, for the same geometry, from the
    pixels kept then (:func:`_decoded_key`, :func:`clear_decoded`) and decodes only the others.

    Args:
        progress: tqdm bar (default: when there are more than 500 images).
    """
    from tqdm import tqdm

    shape = (spec.n, spec.height, spec.width, spec.planes)  # [N, H, W, planes]
    bar = tqdm(total=spec.n, desc="cache", unit="img", disable=not (spec.n > 500 if progress is None else progress),
               mininterval=2.0)
    try:
        if path is None:
            array = np.empty(shape, spec.dtype)
            keys = [_decoded_key(p, info, spec, resize_mode) for p, info in zip(paths, infos)]
            todo = []
            for j, key in enumerate(keys):
                if key in _DECODED:  # decoded earlier in this process (another fold's split)
                    array[j] = _DECODED[key]
                else:
                    todo.append(j)
            bar.update(spec.n - len(todo))
            if todo:
                ds = stored_dataset([paths[j] for j in todo], [infos[j] for j in todo], spec, resize_mode)
                i = 0
                for b in ds.batch(batch).prefetch(2):
                    array[todo[i:i + len(b)]] = b.numpy()
                    i += len(b)
                    bar.update(len(b))
                _remember(keys, todo, array)
            return MemoryStore(array)
        ds = stored_dataset(paths, infos, spec, resize_mode).batch(batch).prefetch(2)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.dtype(spec.dtype).str, "fortran_order": False, "shape": shape})
            for b in ds:
                f.write(np.ascontiguousarray(b.numpy()).tobytes())
                bar.update(len(b))
        return DiskStore(path)
    finally:
        bar.close()


def read_rows(rows: tf.data.Dataset, store, spec: CacheSpec, block: int = 64) -> tf.data.Dataset:
    """``(row, target)`` elements -> ``(stored pixels [H, W, planes], target)``, in the same order.

    Rows are read ``block`` at a time (one Python call per block, not per image), then unbatched.
    """
    dtype = tf.as_dtype(spec.dtype)

    def read(r, y):
        x = tf.numpy_function(store.read, [r], dtype, stateful=False)
        x.set_shape([None, spec.height, spec.width, spec.planes])
        return x, y

    return rows.batch(block).map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()

"""Robust image reading and the bad-image scan that runs before training.

Real chest X-ray collections mix formats and colour modes: NIH ChestX-ray14 ships 8-bit
grayscale PNGs, hospital exports are often 16-bit grayscale PNGs, the COVID-19 image data
collection mixes JPEG/PNG in L, RGB and RGBA (figures cropped from papers), and some files
are palette (``P``) or gray+alpha (``LA``) images. This module reads all of them with PIL
into one convention, and finds every file that cannot be decoded *before* a training run
starts (instead of half-way through an epoch).

Conventions (shared with the tf.data pipeline, :mod:`cxrlib.data.pipeline`):

* Alpha is **dropped**, not composited: RGBA -> RGB, LA -> L, palette with transparency ->
  RGB. The RGB planes of the RGBA radiographs in the COVID-19 image data collection hold the
  image and their alpha is partial noise (e.g. ``pneumocystis-pneumonia-2-L.png``); compositing
  over black would darken them. ``keras.utils.load_img(color_mode="rgb")`` also drops alpha
  (PIL ``convert('RGB')``).
* Gray -> RGB replicates the gray plane; RGB -> gray uses the ITU-R 601-2 luma weights
  (those of ``tf.image.rgb_to_grayscale``).
* 16-bit grayscale keeps its 16 bits (``uint16``); the pipeline scales 0..65535 to float
  0..255 so 8- and 16-bit images share one intensity range without losing precision.
* EXIF orientation is ignored (as TensorFlow and ``keras.utils.load_img`` do).

Which decoder the pipeline uses is decided from the file's magic bytes (not its extension):
PNG and JPEG are decoded in-graph by TensorFlow; anything else PIL can read (BMP, GIF, TIFF,
WebP, ...) goes through a ``tf.numpy_function`` that calls :func:`decode_bytes`.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

# Decoder routes used by the pipeline (index into a tf.switch_case).
DECODER_PNG, DECODER_JPEG, DECODER_PIL = 0, 1, 2
DECODER_NAMES = ("tf-png", "tf-jpeg", "pil")

# ITU-R 601-2 luma, the weights of tf.image.rgb_to_grayscale.
LUMA_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float64)

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_EXTENSIONS = {
    "PNG": {".png"},
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "GIF": {".gif"},
    "BMP": {".bmp"},
    "TIFF": {".tif", ".tiff"},
    "WEBP": {".webp"},
}


def sniff_format(head: bytes) -> str | None:
    """Image format from a file's first bytes (``'PNG'``, ``'JPEG'``, ...), None if unknown.

    Args:
        head: at least the first 12 bytes of the file.
    """
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def decoder_for(fmt: str | None) -> int:
    """Pipeline decoder route for a sniffed format: TF for PNG/JPEG, PIL for the rest."""
    return {"PNG": DECODER_PNG, "JPEG": DECODER_JPEG}.get(fmt or "", DECODER_PIL)


def _read_head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def probe_decoders(paths: Sequence[str | os.PathLike]) -> list[int]:
    """Decoder route of each file from its magic bytes (reads 16 bytes per file).

    Unreadable or unrecognised files get the PIL route, whose error names the file.

    Args:
        paths: image files.
    """
    routes = []
    for p in paths:
        try:
            routes.append(decoder_for(sniff_format(_read_head(Path(p)))))
        except OSError:
            routes.append(DECODER_PIL)
    return routes


def pil_to_array(im: Image.Image) -> np.ndarray:
    """Pixels of a PIL image as ``[H, W, C]`` in their native precision, alpha kept.

    ``C`` is 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA); dtype is ``uint8``, or
    ``uint16`` for 16-bit grayscale (``I;16*`` modes and ``I`` images within 0..65535).

    Args:
        im: an opened PIL image (palette, bilevel, CMYK, YCbCr, ... are converted).

    Raises:
        ValueError: the mode cannot be mapped to 8/16-bit pixels (e.g. float ``F``).
    """
    mode = im.mode
    if mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)
    elif mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"32-bit integer image with values {arr.min()}..{arr.max()} "
                             "outside the 16-bit range")
        arr = arr.astype(np.uint16)
    elif mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
    elif mode == "1":
        arr = np.asarray(im.convert("L"))
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    elif mode == "La":
        arr = np.asarray(im.convert("LA"))
    elif mode in ("RGBa", "RGBX"):
        arr = np.asarray(im.convert("RGBA" if mode == "RGBa" else "RGB"))
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(im.convert("RGB"))
    else:
        raise ValueError(f"unsupported PIL image mode {mode!r}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """Convert ``[H, W, C]`` pixels to ``channels`` (1 or 3): drop alpha, gray<->RGB.

    Args:
        arr: pixels from :func:`pil_to_array` (C in 1..4), any numeric dtype.
        channels: 1 (grayscale) or 3 (RGB).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    color = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]  # drop alpha
    if color.shape[-1] == channels:
        return color
    if channels == 3:
        return np.repeat(color, 3, axis=-1)
    gray = color.astype(np.float64) @ LUMA_WEIGHTS
    if np.issubdtype(arr.dtype, np.integer):
        gray = np.clip(np.rint(gray), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
    return gray[..., None]


def decode_bytes(data: bytes) -> np.ndarray:
    """Decode an encoded image with PIL to float32 ``[H, W, C]`` in 0..255, native channels.

    16-bit images are scaled by 1/257 (65535 -> 255) and keep their fractional precision.
    This is the pipeline's fallback for formats TensorFlow cannot decode in-graph.

    Args:
        data: the file's bytes.
    """
    with Image.open(io.BytesIO(data)) as im:
        arr = pil_to_array(im)
    scale = 257.0 if arr.dtype == np.uint16 else 1.0
    return (arr.astype(np.float32) / np.float32(scale)).astype(np.float32)


def read_image(path: str | os.PathLike, channels: int = 1) -> np.ndarray:
    """Read an image file of any real-world mode as ``[H, W, channels]``.

    Args:
        path: PNG, JPEG or any format PIL reads (the extension is not trusted).
        channels: 1 (grayscale) or 3 (RGB); alpha is dropped (see module docstring).

    Returns:
        ``uint8`` pixels, or ``uint16`` for 16-bit grayscale sources (0..65535). PIL
        reads 48/64-bit RGB(A) PNGs at 8 bits; the TF pipeline keeps their 16 bits.
    """
    with Image.open(path) as im:
        arr = pil_to_array(im)
    return to_channels(arr, channels)


@dataclass(frozen=True)
class BadImage:
    """An image that cannot be used, located by manifest row index and path."""

    index: int  # positional row index in the manifest DataFrame
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} (line {self.index + 2}): {self.reason}"  # CSV line, header = line 1


class BadImageError(ValueError):
    """Raised by :meth:`ScanReport.raise_if_bad`; its message lists the bad files."""

    def __init__(self, bad: Sequence[BadImage], n_total: int, limit: int = 20):
        self.bad = list(bad)
        from cxrlib._text import shown_list

        super().__init__(
            f"{len(self.bad)} of {n_total} image(s) cannot be decoded; fix or remove these "
            f"manifest rows before training:\n  {shown_list(self.bad, limit)}"
        )


@dataclass
class ScanReport:
    """Result of :func:`scan_images`.

    Attributes:
        n_ok: images that decoded fully.
        bad: unusable images (missing, empty, not an image, truncated, corrupt, ...).
        warnings: usable but suspicious images (extension does not match the content,
            every pixel the same value); they are decoded by content and kept.
        decoders: per manifest row, the pipeline decoder route (``DECODER_*``).
        modes: per manifest row, ``"FORMAT mode WxH"`` (e.g. ``"PNG I;16 1024x1024"``) or ''.
    """

    n_ok: int
    bad: list[BadImage] = field(default_factory=list)
    warnings: list[BadImage] = field(default_factory=list)
    decoders: list[int] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)

    @property
    def n_total(self) -> int:
        return self.n_ok + len(self.bad)

    def raise_if_bad(self) -> "ScanReport":
        """Raise :class:`BadImageError` listing every bad path; return self if none."""
        if self.bad:
            raise BadImageError(self.bad, self.n_total)
        return self

    def summary(self) -> str:
        """One line: counts of ok, bad and warnings."""
        return f"{self.n_ok} ok, {len(self.bad)} bad, {len(self.warnings)} warning(s)"


# modes pil_to_array reads without conversion (others are converted once in the scan to prove they can be)
_NATIVE_MODES = {"L", "LA", "RGB", "RGBA", "P", "1", "I;16", "I;16B", "I;16L", "CMYK"}


def _check_one(path: Path) -> tuple[str | None, str | None, int, str]:
    """Decode one file fully; return (error, warning, decoder route, mode description)."""
    if not path.is_file():
        return "file not found", None, DECODER_PIL, ""
    if path.stat().st_size == 0:
        return "empty file (0 bytes)", None, DECODER_PIL, ""
    head = _read_head(path)
    fmt = sniff_format(head)
    try:
        if fmt == "PNG":  # verify() checks the chunk CRCs, which load() does not
            with Image.open(path) as im:
                im.verify()
        with Image.open(path) as im:
            im.load()  # full decode: truncated/corrupt data fails here, not in the header
            fmt = im.format or fmt
            width, height = im.size
            mode = im.mode
            if width == 0 or height == 0:
                return f"zero-size image ({width}x{height})", None, DECODER_PIL, ""
            if mode not in _NATIVE_MODES:
                pil_to_array(im)  # raises for modes that cannot be mapped to 8/16-bit pixels
            extrema = im.getextrema()  # (min, max), or one pair per band
    except UnidentifiedImageError:
        return f"not an image file (first bytes {head[:8]!r})", None, DECODER_PIL, ""
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        what = fmt or "image"
        return f"cannot decode {what}: {type(e).__name__}: {e}", None, DECODER_PIL, ""
    warning = None
    ext = path.suffix.lower()
    if fmt in _EXTENSIONS and ext not in _EXTENSIONS[fmt]:
        warning = f"content is {fmt} but the extension is {ext or '(none)'!r} (decoded by content)"
    else:
        bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
        if all(lo == hi for lo, hi in bands):
            warning = f"every pixel has the value {[lo for lo, _ in bands]} (blank image)"
    return None, warning, decoder_for(fmt), f"{fmt} {mode} {width}x{height}"


def _file_key(path: Path) -> str | None:
    """``"size<TAB>mtime_ns<TAB>absolute path"`` of an existing file, else None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}\t{st.st_mtime_ns}\t{path.resolve()}"


def _read_memo(memo: Path) -> set[str]:
    if not memo.is_file():
        return set()
    return {line for line in memo.read_text(encoding="utf-8").splitlines() if line.count("\t") == 2}


def _write_memo(memo: Path, keys: set[str]) -> None:
    """Write the memo atomically (a crash leaves the previous one intact)."""
    from cxrlib.io import write_text

    write_text(memo, "".join(k + "\n" for k in sorted(keys)))  # unique temp name: runs may share a memo


def scan_images(
    df: pd.DataFrame,
    root: str | os.PathLike,
    column: str = "path",
    workers: int | None = None,
    memo: str | os.PathLike | None = None,
    fingerprints: str | os.PathLike | bool | None = None,
) -> ScanReport:
    """Fully decode every image of a manifest and report the ones that cannot be used.

    Finds missing files, empty (0-byte) files, files that are not images (e.g. a text or
    HTML file named ``.png``), truncated and corrupt PNG/JPEG data (PNG CRCs are checked),
    zero-size images and unsupported modes. A decoding thread pool keeps it fast (PIL
    releases the GIL while decoding). Cost: about one PIL decode per image (measured
    ~20-30 CPU ms for a 1-3 Mpx radiograph), so 112,120 NIH images take ~50 CPU minutes;
    use ``memo`` to pay it once.

    Args:
        df: manifest table; ``df[column]`` holds paths relative to ``root``.
        root: data root.
        column: the path column.
        workers: decoding threads (default: 2 x CPU cores, at most 16).
        memo: optional text file of files already found good, keyed by size, mtime and
            absolute path; those are not decoded again (a changed file is), and new good
            files are added. Warnings are only reported when a file is first decoded.
        fingerprints: the fingerprint store of :mod:`cxrlib.data.fingerprints` (None: the
            default store, False: none). Files it holds for the same (path, size, mtime) were
            fully decoded when hashed for deduplication: their result is taken from it, so the
            data stage decodes each image once.

    Returns:
        a :class:`ScanReport`; call ``.raise_if_bad()`` to stop on any bad image.
    """
    root = Path(root)
    rel_paths = [str(p) for p in df[column].tolist()]
    known = _read_memo(Path(memo)) if memo is not None else set()
    keys = [_file_key(root / p) for p in rel_paths] if memo is not None else [None] * len(rel_paths)
    todo = [i for i, k in enumerate(keys) if k is None or k not in known]
    checked = _from_fingerprints(root, rel_paths, todo, fingerprints)
    todo = [i for i in todo if i not in checked]
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked.update(zip(todo, pool.map(lambda i: _check_one(root / rel_paths[i]), todo)))
    report = ScanReport(n_ok=0)
    for i, rel in enumerate(rel_paths):
        full = str(root / rel)
        if i in checked:
            error, warning, route, mode = checked[i]
        else:  # memo hit: known good, route from the magic bytes
            error, warning, route, mode = None, None, probe_decoders([root / rel])[0], ""
        if error is not None:
            report.bad.append(BadImage(i, full, error))
        else:
            report.n_ok += 1
        if warning is not None:
            report.warnings.append(BadImage(i, full, warning))
        report.decoders.append(route)
        report.modes.append(mode)
    if memo is not None:
        good = {keys[i] for i in checked if checked[i][0] is None and keys[i] is not None}
        if not good <= known:
            _write_memo(Path(memo), known | good)
    return report


def _from_fingerprints(root: Path, rel_paths: list[str], todo: list[int], store) -> dict:
    """Scan results of the files the fingerprint store already decoded (same path, size, mtime)."""
    if store is False or not todo:
        return {}
    from cxrlib.data.fingerprints import Store, default_store, file_key

    folder = Path(default_store() if store is None else store)
    if not (folder / "index.tsv").is_file():
        return {}
    st = Store(folder)
    errors = st.index["error"].tolist()
    out = {}
    for i in todo:
        path = root / rel_paths[i]
        r = st.row.get(file_key(path) or "")
        if r is not None:
            err = errors[r] or None
            out[i] = (err, None, DECODER_PIL if err else probe_decoders([path])[0], "")
    return out


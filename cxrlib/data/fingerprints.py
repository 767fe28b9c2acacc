"""One read and one decode per image: SHA-1, perceptual hash, thumbnail and the decode check.

Deduplication (:mod:`cxrlib.data.dedup`) needs the SHA-1 of each file, its 64-bit DCT
perceptual hash (ImageHash ``phash``) and a 32x32 thumbnail to verify near-duplicate
candidates; the bad-image scan (:func:`cxrlib.data.images.scan_images`) needs a full decode.
For the full NIH ChestX-ray14 set (112,120 PNGs of 1024 px) each full decode costs ~11-17 CPU ms,
so all four come from a single read + decode, in worker processes on all cores, and the
results are persisted keyed by (absolute path, size, mtime): a rerun decodes nothing, and a
changed file is decoded again.

Store (one per user, shared by every data root): ``$CXR_CACHE_DIR/fingerprints/`` (default
``~/.cache/cxrlib/fingerprints/``) with ``index.tsv`` (key, sha1, phash, error) and
``thumbs.npy`` (float32 ``[M, 1024]``, standardised thumbnails, row-aligned). Both are
rewritten atomically; entries of files that disappeared or changed are dropped on write.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib.io import atomic_path, write_text

THUMB_SIZE = 32
STORE_VERSION = "1"
COLUMNS = ("key", "sha1", "phash", "error")
# fork (Linux): no re-import of the caller's __main__ (scripts without a main guard work); the
# children run only NumPy/PIL code, never TensorFlow, so forking a process with TF threads is safe
_START = "fork" if sys.platform.startswith("linux") else "spawn"


def default_store() -> Path:
    """``$CXR_CACHE_DIR/fingerprints`` or ``~/.cache/cxrlib/fingerprints``."""
    base = os.environ.get("CXR_CACHE_DIR") or Path.home() / ".cache" / "cxrlib"
    return Path(base) / "fingerprints"


def file_key(path: str | os.PathLike) -> str | None:
    """``"size:mtime_ns:absolute path"`` of an existing file, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{os.path.abspath(path)}"


def _phash(im) -> str:
    import imagehash
    from PIL import Image

    if im.mode.startswith("I"):  # 16-bit: stretch to 8 bits before hashing (as dedup always did)
        arr = np.asarray(im, dtype=np.float64)
        span = max(arr.max() - arr.min(), 1.0)
        im = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
    return str(imagehash.phash(im.convert("L")))


def _thumb(im, size: int = THUMB_SIZE) -> np.ndarray:
    from PIL import Image

    if im.mode.startswith("I"):
        im = Image.fromarray(np.asarray(im, dtype=np.float32), mode="F")
    x = np.asarray(im.convert("F").resize((size, size), Image.BILINEAR), dtype=np.float64).ravel()
    return ((x - x.mean()) / (x.std() + 1e-9)).astype(np.float32)  # [size*size]


def _reduced(im, side: int = 8 * THUMB_SIZE):
    """``im`` box-reduced by an integer factor to no less than ``side`` px (PIL ``reduce``).

    phash (Lanczos to 32x32) and the thumbnail (bilinear to 32x32) of a 1024 px radiograph cost
    more than its decode; from a >= 256 px box reduction they are the same up to rounding
    (measured on the real sample: the same duplicate pairs, correlations within 1e-3).
    """
    k = min(im.size) // side
    if k < 2 or im.mode.startswith(("I", "F")) or im.mode in ("P", "1"):
        return im
    return im.reduce(k)


def fingerprint(path: str | os.PathLike) -> tuple[str, str, str, np.ndarray]:
    """(sha1, phash, error, thumbnail [1024]) of one file from one read and one decode.

    ``error`` is '' for a usable image, else the reason (missing, empty, not an image,
    truncated/corrupt, PNG CRC); sha1/phash are then '' (sha1 kept when the bytes were read).
    """
    from PIL import Image, UnidentifiedImageError

    zeros = np.zeros(THUMB_SIZE * THUMB_SIZE, np.float32)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return "", "", f"cannot read: {exc}", zeros
    sha1 = hashlib.sha1(data).hexdigest()
    if not data:
        return sha1, "", "empty file (0 bytes)", zeros
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            with Image.open(io.BytesIO(data)) as im:
                im.verify()  # chunk CRCs (no decode)
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # the one full decode
            if 0 in im.size:
                return sha1, "", f"zero-size image {im.size}", zeros
            small = _reduced(im)
            return sha1, _phash(small), "", _thumb(small)
    except UnidentifiedImageError:
        return sha1, "", f"not an image file (first bytes {data[:8]!r})", zeros
    except Exception as exc:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, ...
        return sha1, "", f"cannot decode: {type(exc).__name__}: {exc}", zeros


def _fingerprint_many(paths: list[str]) -> list[tuple[str, str, str, np.ndarray]]:
    return [fingerprint(p) for p in paths]


class Store:
    """The persisted fingerprints (see module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.index = pd.DataFrame(columns=list(COLUMNS))
        self.thumbs = np.zeros((0, THUMB_SIZE * THUMB_SIZE), np.float32)
        tsv, npy = self.folder / "index.tsv", self.folder / "thumbs.npy"
        if tsv.is_file() and npy.is_file():
            try:
                index = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False, quoting=3)
                thumbs = np.load(npy, mmap_mode="r")
                if list(index.columns) == list(COLUMNS) and len(index) == len(thumbs):
                    self.index, self.thumbs = index, thumbs
            except (OSError, ValueError, pd.errors.ParserError):
                pass  # unreadable store: recomputed and rewritten
        self.row = dict(zip(self.index["key"], range(len(self.index))))

    def save(self, keys, sha1, phash, error, thumbs: np.ndarray) -> None:
        """Merge new entries into the store; drop entries whose file changed or vanished."""
        new = set(keys)
        keep = [i for i, k in enumerate(self.index["key"].tolist()) if k not in new and _still_valid(k)]
        error = [" ".join(str(e).split()) for e in error]  # one TSV field
        index = pd.concat([self.index.iloc[keep],
                           pd.DataFrame({"key": keys, "sha1": sha1, "phash": phash, "error": error})],
                          ignore_index=True)
        thumbs = np.concatenate([np.asarray(self.thumbs[keep]), thumbs.astype(np.float32)])
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "thumbs.npy") as tmp:
            np.save(tmp, thumbs)
        text = index.to_csv(sep="\t", index=False, quoting=3, escapechar="\\")
        write_text(self.folder / "index.tsv", text)


def _still_valid(key: str) -> bool:
    path = key.split(":", 2)[2]
    return file_key(path) == key


def fingerprints(paths: Sequence[str | os.PathLike], store: str | os.PathLike | bool | None = None,
                 workers: int | None = None, progress: bool | None = None
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """Fingerprints of ``paths``: (table [sha1, phash, error] in path order, thumbnails [N, 1024]).

    Args:
        paths: image files.
        store: store folder; None = :func:`default_store`; False = compute without persisting.
        workers: decoding processes (default: all cores).
        progress: tqdm bar with ETA (default: when more than 200 files must be decoded).
    """
    from tqdm import tqdm

    paths = [str(p) for p in paths]
    keys = [file_key(p) for p in paths]
    st = Store(default_store() if store is None else store) if store is not False else None
    have = [st.row.get(k, -1) if (st is not None and k is not None) else -1 for k in keys]
    todo = [i for i, r in enumerate(have) if r < 0]
    n = len(paths)
    sha1, phash, error = [""] * n, [""] * n, [""] * n
    thumbs = np.zeros((n, THUMB_SIZE * THUMB_SIZE), np.float32)  # [N, 1024]
    hit = [i for i in range(n) if have[i] >= 0]
    if hit:
        rows = np.array([have[i] for i in hit])
        sub = st.index.iloc[rows]
        for col, out in (("sha1", sha1), ("phash", phash), ("error", error)):
            for i, v in zip(hit, sub[col].tolist()):
                out[i] = v
        order = np.argsort(rows)  # sorted reads from the memory-mapped store
        thumbs[np.array(hit)[order]] = st.thumbs[rows[order]]
    if todo:
        workers = max(1, min(workers or os.cpu_count() or 1, len(todo) // 64 + 1))
        chunks = [[paths[i] for i in todo[j:j + 64]] for j in range(0, len(todo), 64)]
        bar = tqdm(total=len(todo), desc="fingerprints (sha1+phash+thumb+check)", unit="img", file=sys.stderr,
                   disable=not (len(todo) > 200 if progress is None else progress), mininterval=2.0)
        if workers == 1:
            results = map(_fingerprint_many, chunks)
        else:
            pool = ProcessPoolExecutor(workers, mp_context=get_context(_START))
            results = pool.map(_fingerprint_many, chunks)
        try:
            k = 0
            for chunk in results:
                for s, h, e, t in chunk:
                    i = todo[k]
                    sha1[i], phash[i], error[i], thumbs[i] = s, h, e, t
                    k += 1
                bar.update(len(chunk))
        finally:
            bar.close()
            if workers > 1:
                pool.shutdown(cancel_futures=True)
        if st is not None:
            ok = [i for i in todo if keys[i] is not None]
            st.save([keys[i] for i in ok], [sha1[i] for i in ok], [phash[i] for i in ok], [error[i] for i in ok],
                    thumbs[ok])
    return pd.DataFrame({"sha1": sha1, "phash": phash, "error": error}), thumbs

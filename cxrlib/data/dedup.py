"""Duplicate images within and across sources: exact (SHA-1) and near (perceptual hash).

The same COVID-19 radiograph is published in several collections, re-encoded, resized,
re-contrasted or re-labelled, so merged sets must be deduplicated before splitting
(otherwise one image can sit in train and test). Exact copies share the SHA-1 of the file.
Near copies are found in two steps:

1. candidates: 64-bit DCT perceptual hashes (ImageHash ``phash``) within ``max_distance``
   bits, by a BallTree radius query (no O(n^2) Python loop);
2. verification: Pearson correlation of 32x32 grayscale thumbnails >= ``min_correlation``.

Why two steps (measured on ../shared/data, 2,204 images; numbers in data_manifests/README.md):
chest radiographs all look alike to a 64-bit hash. Two *different* NIH patients' images are
2 bits apart, 7 different-patient pairs are within 4 bits and 84 within 6, and NIH images
come within 4-6 bits of Cohen COVID images. Hash distance alone cannot separate copies from
look-alikes. The thumbnail correlation can: the highest correlation of 16,824 known-distinct
pairs (different NIH patients, NIH vs COVID collections) is 0.963, while resized/re-encoded
copies (fullres vs 256 px) are >= 0.9997 and visually confirmed re-contrasted or re-labelled
copies in the Cohen and Figure 1 collections are 0.978-1.0 at 0-4 bits. Defaults:
``max_distance`` = 10 bits (covers every confirmed copy, 4 bits max, with margin),
``min_correlation`` = 0.975. Re-cropped copies change both measures and can be missed.

Without ``root`` (no pixels to verify), near duplicates are only reported at hash
distance 0 (every distance-0 pair in the sample data is a true copy).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_MAX_DISTANCE = 10
DEFAULT_MIN_CORRELATION = 0.975
THUMB_SIZE = 32
HASH_BITS = 64
PAIR_COLUMNS = ("path_a", "path_b", "source_a", "source_b", "kind", "distance", "correlation")


def file_sha1(path: str | os.PathLike) -> str:
    """SHA-1 hex digest of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_phash(path: str | os.PathLike) -> str:
    """64-bit perceptual hash (ImageHash ``phash`` of the grayscale image) as 16 hex digits."""
    import imagehash
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: scale to 8 bits before hashing
            arr = np.asarray(im, dtype=np.float64)
            span = max(arr.max() - arr.min(), 1.0)
            im = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
        return str(imagehash.phash(im.convert("L")))


def thumbnail(path: str | os.PathLike, size: int = THUMB_SIZE) -> np.ndarray:
    """Grayscale thumbnail [size*size], standardised (zero mean, unit variance)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode.startswith("I"):
            im = Image.fromarray(np.asarray(im, dtype=np.float32), mode="F")
        x = np.asarray(im.convert("F").resize((size, size), Image.BILINEAR), dtype=np.float64).ravel()
    return (x - x.mean()) / (x.std() + 1e-9)  # [size*size]


def thumbnail_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two standardised thumbnails."""
    return float(a @ b / a.size)


def add_hashes(df: pd.DataFrame, root: str | os.PathLike, progress: bool = False) -> pd.DataFrame:
    """Return a copy of ``df`` with ``sha1`` and ``phash`` columns (existing values kept).

    Args:
        df: manifest table.
        root: data root the ``path`` column is relative to.
        progress: show a tqdm progress bar.

    Raises:
        ValueError: an image cannot be read, naming the CSV line and path.
    """
    from cxrlib.data.manifest import line_of

    root = Path(root)
    out = df.copy()
    for col in ("sha1", "phash"):
        if col not in out.columns:
            out[col] = ""
    todo = [i for i in range(len(out)) if not out["sha1"].iat[i] or not out["phash"].iat[i]]
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, desc="hashing", unit="img")
    sha1, phash = out["sha1"].tolist(), out["phash"].tolist()
    for i in todo:
        path = root / out["path"].iat[i]
        try:
            sha1[i] = sha1[i] or file_sha1(path)
            phash[i] = phash[i] or image_phash(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"line {line_of(i)}: cannot hash {path}: {exc}") from exc
    out["sha1"], out["phash"] = sha1, phash
    return out


def hash_bits(hashes) -> np.ndarray:
    """16-hex-digit hashes -> bool array [N, 64] (bit order as ImageHash)."""
    ints = np.array([int(h, 16) for h in hashes], dtype=np.uint64)  # [N]
    shifts = np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64)  # [64], most significant first
    return ((ints[:, None] >> shifts[None, :]) & np.uint64(1)).astype(bool)  # [N, 64]


def hamming_neighbors(hashes, max_distance: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance), i < j, of hashes within ``max_distance`` bits.

    Uses a scikit-learn BallTree with the Hamming metric (radius query), not an O(n^2) loop.

    Args:
        hashes: 16-hex-digit perceptual hashes.
        max_distance: largest Hamming distance (bits) reported.
    """
    from sklearn.neighbors import BallTree

    hashes = list(hashes)
    if len(hashes) < 2:
        return []
    bits = hash_bits(hashes)  # [N, 64]
    tree = BallTree(bits, metric="hamming")
    # sklearn's hamming is the fraction of differing bits; tiny epsilon makes the radius inclusive
    ind, dist = tree.query_radius(bits, r=(max_distance + 0.5) / HASH_BITS, return_distance=True)
    pairs = []
    for i, (js, ds) in enumerate(zip(ind, dist)):
        for j, d in zip(js, ds):
            if j > i:
                pairs.append((i, int(j), int(round(d * HASH_BITS))))
    return sorted(pairs)


def find_duplicates(df: pd.DataFrame, root: str | os.PathLike | None = None,
                    max_distance: int = DEFAULT_MAX_DISTANCE, min_correlation: float = DEFAULT_MIN_CORRELATION,
                    cross_source_only: bool = False) -> pd.DataFrame:
    """Pairs of duplicate images in a manifest.

    Args:
        df: manifest; needs ``sha1``/``phash`` columns unless ``root`` is given to compute them.
        root: data root: hashes missing values and verifies near-duplicate candidates on pixels.
            Without it only exact copies and identical phashes are reported.
        max_distance: phash Hamming distance (bits of 64) of near-duplicate candidates;
            negative disables near-duplicate search (exact only).
        min_correlation: thumbnail correlation a candidate needs to be reported.
        cross_source_only: report only pairs from different sources.

    Returns:
        DataFrame[path_a, path_b, source_a, source_b, kind ('exact' | 'near'), distance,
        correlation] with one row per pair (path_a before path_b in manifest order);
        ``correlation`` is NaN for exact copies and unverified pairs.
    """
    if root is not None:
        df = add_hashes(df, root)
    for col in ("sha1", "phash"):
        if col not in df.columns or (df[col] == "").any():
            raise ValueError(f"column {col!r} missing or incomplete: run add_hashes(df, root) or pass root=")
    paths, sources = df["path"].tolist(), df["source"].tolist()
    found: dict[tuple[int, int], tuple[str, int, float]] = {}
    for idx in df.groupby("sha1", sort=False).indices.values():
        idx = sorted(idx)
        found.update({(a, b): ("exact", 0, np.nan) for a in idx for b in idx if a < b})
    limit = max_distance if root is not None else min(max_distance, 0)
    if root is None and max_distance > 0:
        warnings.warn(f"find_duplicates without root=: near duplicates are only searched at phash distance 0, "
                      f"not {max_distance} (unverified hash distances merge different chest X-rays; "
                      "see cxrlib.data.dedup)", stacklevel=2)
    thumbs: dict[int, np.ndarray] = {}

    def thumb(i: int) -> np.ndarray:
        if i not in thumbs:
            thumbs[i] = thumbnail(Path(root) / paths[i])
        return thumbs[i]

    for a, b, d in hamming_neighbors(df["phash"], limit) if limit >= 0 else []:
        if (a, b) in found or (cross_source_only and sources[a] == sources[b]):
            continue
        if root is None:
            found[(a, b)] = ("near", d, np.nan)
            continue
        corr = thumbnail_correlation(thumb(a), thumb(b))
        if corr >= min_correlation:
            found[(a, b)] = ("near", d, round(corr, 4))
    rows = [dict(path_a=paths[a], path_b=paths[b], source_a=sources[a], source_b=sources[b], kind=k,
                 distance=d, correlation=c)
            for (a, b), (k, d, c) in sorted(found.items())
            if not cross_source_only or sources[a] != sources[b]]
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def _components(items: list[str], edges) -> dict[str, str]:
    """Union-find: item -> representative (the member first in ``items`` order)."""
    order = {p: i for i, p in enumerate(items)}
    parent = {p: p for p in order}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for a, b in edges:
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                keep, drop = (ra, rb) if order[ra] < order[rb] else (rb, ra)
                parent[drop] = keep
    return {p: find(p) for p in order}


def duplicate_groups(paths, pairs: pd.DataFrame) -> dict[str, str]:
    """Connected components of the duplicate graph: path -> group representative path.

    The representative is the member that comes first in ``paths`` order.
    """
    return _components(list(paths), zip(pairs["path_a"], pairs["path_b"]))


def patient_groups(df: pd.DataFrame, pairs: pd.DataFrame) -> pd.Series:
    """Patient group of every row, merging patients that share a duplicate image.

    An image published twice under two patient ids (or in two collections) means the two
    ids are, as far as anyone can tell, one patient: all their images must stay on the same
    side of a split. Returns ``source:patient_id`` of the group's first patient, per row
    (adapters already write ids as ``source:id``; those are not prefixed twice).

    Args:
        df: manifest (``source``, ``patient_id``, ``path``).
        pairs: duplicate pairs from :func:`find_duplicates`.
    """
    prefix = df["source"].astype(str) + ":"
    pid = df["patient_id"].astype(str)
    key = pd.Series([p if p.startswith(s) else s + p for s, p in zip(prefix, pid)], index=df.index)
    of_path = dict(zip(df["path"], key))
    edges = [(of_path[a], of_path[b]) for a, b in zip(pairs["path_a"], pairs["path_b"])
             if a in of_path and b in of_path]
    rep = _components(list(dict.fromkeys(key)), edges)
    return key.map(rep)


def drop_duplicates(df: pd.DataFrame, pairs: pd.DataFrame, prefer: tuple[str, ...] = ()
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one image per duplicate group; return (kept, removed).

    The kept image is deterministic: the first in ``prefer`` source order, then manifest
    order. ``removed`` has a ``duplicate_of`` column naming the kept path.

    Args:
        df: manifest.
        pairs: output of :func:`find_duplicates`.
        prefer: sources to keep first (e.g. the collection with the best metadata).
    """
    rank = {s: i for i, s in enumerate(prefer)}
    order = sorted(range(len(df)), key=lambda i: (rank.get(df["source"].iat[i], len(rank)), i))
    groups = duplicate_groups([df["path"].iat[i] for i in order], pairs)
    rep = df["path"].map(groups)
    is_kept = (rep == df["path"]).to_numpy()
    kept = df[is_kept].reset_index(drop=True)
    removed = df[~is_kept].copy()
    removed["duplicate_of"] = rep[~is_kept]
    return kept, removed.reset_index(drop=True)

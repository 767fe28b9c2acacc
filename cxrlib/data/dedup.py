"""Duplicate images within and across sources: exact (SHA-1) and near (perceptual hash).

The same COVID-19 radiograph is published in several collections, re-encoded, resized,
re-contrasted or re-labelled, so merged sets must be deduplicated before splitting
(otherwise one image can sit in train and test). Exact copies share the SHA-1 of the file.
Near copies are found in two steps:

1. candidates: 64-bit DCT perceptual hashes (ImageHash ``phash``) within ``max_distance``
   bits;
2. verification: Pearson correlation of 32x32 grayscale thumbnails >= ``min_correlation``.

How it scales (full NIH: 112,120 images): every image is read and decoded once, in worker
processes, for SHA-1, phash, thumbnail and the decode check (:mod:`cxrlib.data.fingerprints`,
persisted by (path, size, mtime), so a rerun decodes nothing). Pairs satisfying both
conditions are found without enumerating all pairs: a correlation >= c between standardised
thumbnails (squared norm <= 1024) bounds their Euclidean distance by sqrt(2048 (1 - c)), and an
orthonormal projection (the 48 lowest-frequency 2-D DCT patterns) can only shrink distances,
so a KD-tree radius query in 48 dimensions returns a superset of the verified pairs (no
false negatives). Its candidates are then checked vectorised: phash popcount <= max_distance and
the exact 1024-dim correlation, in blocks (no per-pair Python).

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
import math
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
    """64-bit perceptual hash (ImageHash ``phash`` of the grayscale image) as 16 hex digits.

    Computed as in :func:`cxrlib.data.fingerprints.fingerprint` (the one home of the hashing).
    """
    from PIL import Image

    from cxrlib.data.fingerprints import _phash, _reduced

    with Image.open(path) as im:
        im.load()
        return _phash(_reduced(im))


def thumbnail(path: str | os.PathLike, size: int = THUMB_SIZE) -> np.ndarray:
    """Grayscale thumbnail [size*size], standardised (zero mean, unit variance)."""
    from PIL import Image

    from cxrlib.data.fingerprints import _reduced, _thumb

    with Image.open(path) as im:
        im.load()
        return _thumb(_reduced(im, 8 * size), size).astype(np.float64)  # [size*size]


def thumbnail_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two standardised thumbnails."""
    return float(a @ b / a.size)


def add_hashes(df: pd.DataFrame, root: str | os.PathLike, progress: bool | None = None,
               store: str | os.PathLike | bool | None = None, workers: int | None = None) -> pd.DataFrame:
    """Return a copy of ``df`` with ``sha1`` and ``phash`` columns (existing values kept).

    One read + decode per image in worker processes, persisted by (path, size, mtime)
    (:func:`cxrlib.data.fingerprints.fingerprints`): a rerun decodes nothing.

    Args:
        df: manifest table.
        root: data root the ``path`` column is relative to.
        progress: tqdm bar with ETA (default: when more than 200 images must be decoded).
        store: fingerprint store folder; None = default (``~/.cache/cxrlib``), False = none.
        workers: decoding processes (default: all cores).

    Raises:
        ValueError: an image cannot be read, naming the CSV line, path and reason.
    """
    return _hashed(df, root, store, progress, workers, thumbs=False)[0]


def _hashed(df, root, store, progress, workers, thumbs: bool) -> tuple[pd.DataFrame, np.ndarray | None]:
    """(df with sha1/phash, thumbnails [N, 1024] if ``thumbs``): fingerprints of the rows that
    need them (all rows when thumbnails are asked for; store hits cost no decode)."""
    from cxrlib.data.fingerprints import fingerprints
    from cxrlib.data.manifest import line_of

    root = Path(root)
    out = df.copy()
    for col in ("sha1", "phash"):
        if col not in out.columns:
            out[col] = ""
    missing = ((out["sha1"] == "") | (out["phash"] == "")).to_numpy()
    todo = np.arange(len(out)) if thumbs else np.flatnonzero(missing)
    if not len(todo):
        return out, None
    fp, th = fingerprints([root / out["path"].iat[i] for i in todo], store=store, workers=workers,
                          progress=progress)
    bad = np.flatnonzero((fp["error"] != "").to_numpy() & missing[todo])
    if len(bad):
        from cxrlib._text import shown_list

        msgs = [f"line {line_of(todo[k])}, column 'path': cannot hash {root / out['path'].iat[todo[k]]}: "
                f"{fp['error'].iat[k]}" for k in bad]
        raise ValueError(shown_list(msgs, 20, sep="\n"))
    sha1, phash = out["sha1"].to_numpy(dtype=object), out["phash"].to_numpy(dtype=object)
    sha1[todo] = np.where(sha1[todo] != "", sha1[todo], fp["sha1"].to_numpy(dtype=object))
    phash[todo] = np.where(phash[todo] != "", phash[todo], fp["phash"].to_numpy(dtype=object))
    out["sha1"], out["phash"] = list(sha1), list(phash)
    return out, th


def hash_ints(hashes) -> np.ndarray:
    """16-hex-digit hashes -> uint64 [N]."""
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def hash_bits(hashes) -> np.ndarray:
    """16-hex-digit hashes -> bool array [N, 64] (bit order as ImageHash)."""
    ints = hash_ints(hashes)  # [N]
    shifts = np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64)  # [64], most significant first
    return ((ints[:, None] >> shifts[None, :]) & np.uint64(1)).astype(bool)  # [N, 64]


_POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (vectorised, byte lookup table)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POP8[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.int64)


def hamming_neighbors(hashes, max_distance: int, block: int = 2048) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance), i < j, of hashes within ``max_distance`` bits.

    Exhaustive, vectorised in blocks of ``block`` rows (numpy XOR + popcount; no per-pair
    Python). For large sets :func:`find_duplicates` does not enumerate pairs (module docstring).

    Args:
        hashes: 16-hex-digit perceptual hashes.
        max_distance: largest Hamming distance (bits) reported.
    """
    ints = hash_ints(list(hashes))  # [N]
    out = []
    for s in range(0, len(ints), block):
        d = popcount(ints[s:s + block, None] ^ ints[None, :])  # [B, N]
        i, j = np.nonzero(d <= max_distance)
        i = i + s
        keep = j > i
        out += list(zip(i[keep].tolist(), j[keep].tolist(), d[i[keep] - s, j[keep]].tolist()))
    return sorted(out)


def _dct_basis(size: int = THUMB_SIZE, k: int = 48) -> np.ndarray:
    """Orthonormal basis [size*size, k] of the ``k`` lowest-frequency 2-D DCT-II patterns (DC left out).

    Any orthonormal projection only shrinks distances (no false negatives); a fixed low-frequency
    basis concentrates most of a radiograph thumbnail's variance, costs no fitting, and keeps the
    projection at k floats per image (float32 [N, 1024] @ [1024, k]).
    """
    n = np.arange(size)
    d = np.sqrt(2.0 / size) * np.cos(np.pi * (n[None, :] + 0.5) * n[:, None] / size)  # [freq, pixel]
    d[0] /= np.sqrt(2.0)
    freqs = sorted(((u, v) for u in range(size) for v in range(size) if (u, v) != (0, 0)),
                   key=lambda uv: (uv[0] + uv[1], uv))[:k]
    return np.stack([np.outer(d[u], d[v]).ravel() for u, v in freqs], axis=1).astype(np.float32)  # [D, k]


def near_pairs(thumbs: np.ndarray, phash_ints: np.ndarray, max_distance: int, min_correlation: float,
               block: int = 16_384) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a, b, phash distance, correlation), a < b, within ``max_distance`` bits and
    ``min_correlation`` (vectorised; see module docstring).

    Args:
        thumbs: standardised thumbnails [N, 1024] (zero rows never match).
        phash_ints: perceptual hashes as uint64 [N].
    """
    from scipy.spatial import cKDTree

    n, dim = thumbs.shape
    if n < 2:
        e = np.zeros(0, np.int64)
        return e, e, e, np.zeros(0)
    radius = math.sqrt(max(0.0, 2.0 * dim * (1.0 - min_correlation))) * (1 + 1e-6) + 1e-6
    side = int(round(math.sqrt(dim)))
    proj = np.asarray(thumbs, np.float32) @ _dct_basis(side)  # [N, 48]
    cand = cKDTree(proj).query_pairs(radius, output_type="ndarray")  # [P, 2], i < j
    a_all, b_all, d_all, c_all = [], [], [], []
    for s in range(0, len(cand), block):
        a, b = cand[s:s + block, 0], cand[s:s + block, 1]
        d = popcount(phash_ints[a] ^ phash_ints[b])  # [p]
        ok = d <= max_distance
        a, b, d = a[ok], b[ok], d[ok]
        corr = np.einsum("ij,ij->i", thumbs[a], thumbs[b]) / dim  # [p]
        ok = corr >= min_correlation
        a_all.append(a[ok]), b_all.append(b[ok]), d_all.append(d[ok]), c_all.append(corr[ok])
    if not a_all:
        e = np.zeros(0, np.int64)
        return e, e, e, np.zeros(0)
    return (np.concatenate(a_all), np.concatenate(b_all), np.concatenate(d_all), np.concatenate(c_all))


def find_duplicates(df: pd.DataFrame, root: str | os.PathLike | None = None,
                    max_distance: int = DEFAULT_MAX_DISTANCE, min_correlation: float = DEFAULT_MIN_CORRELATION,
                    cross_source_only: bool = False, store: str | os.PathLike | bool | None = None,
                    progress: bool | None = None) -> pd.DataFrame:
    """Pairs of duplicate images in a manifest.

    Args:
        df: manifest; needs ``sha1``/``phash`` columns unless ``root`` is given to compute them.
        root: data root: hashes missing values and verifies near-duplicate candidates on pixels.
            Without it only exact copies and identical phashes are reported.
        max_distance: phash Hamming distance (bits of 64) of near-duplicate candidates;
            negative disables near-duplicate search (exact only).
        min_correlation: thumbnail correlation a candidate needs to be reported.
        cross_source_only: report only pairs from different sources.
        store: fingerprint store (see :func:`add_hashes`).
        progress: tqdm bar while decoding (default: when more than 200 images are new).

    Returns:
        DataFrame[path_a, path_b, source_a, source_b, kind ('exact' | 'near'), distance,
        correlation] with one row per pair (path_a before path_b in manifest order);
        ``correlation`` is NaN for exact copies and unverified pairs.
    """
    thumbs = None
    if root is not None:
        df, thumbs = _hashed(df, root, store, progress, None, thumbs=True)
    for col in ("sha1", "phash"):
        if col not in df.columns or (df[col] == "").any():
            raise ValueError(f"column {col!r} missing or incomplete: run add_hashes(df, root) or pass root=")
    paths, sources = df["path"].tolist(), df["source"].tolist()
    found: dict[tuple[int, int], tuple[str, int, float]] = {}
    for idx in df.groupby("sha1", sort=False).indices.values():
        if len(idx) > 1:
            idx = sorted(idx)
            found.update({(a, b): ("exact", 0, np.nan) for a in idx for b in idx if a < b})
    if root is None and max_distance > 0:
        warnings.warn(f"find_duplicates without root=: near duplicates are only searched at phash distance 0, "
                      f"not {max_distance} (unverified hash distances merge different chest X-rays; "
                      "see cxrlib.data.dedup)", stacklevel=2)
    if max_distance >= 0 and root is None:
        for idx in df.groupby("phash", sort=False).indices.values():
            if len(idx) > 1:
                idx = sorted(idx)
                for a in idx:
                    for b in idx:
                        if a < b:
                            found.setdefault((a, b), ("near", 0, np.nan))
    elif max_distance >= 0:
        a, b, d, c = near_pairs(thumbs, hash_ints(df["phash"]), max_distance, min_correlation)
        for a_, b_, d_, c_ in zip(a.tolist(), b.tolist(), d.tolist(), np.round(c, 4).tolist()):
            found.setdefault((a_, b_), ("near", int(d_), float(c_)))
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

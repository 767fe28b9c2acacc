"""Rehearsal datasets: phantom radiographs in the exact published layouts, at any size.

The researchers who use cxrlib run it on the full public collections (NIH ChestX-ray14 alone is
112,120 images of 30,805 patients). Those cannot be downloaded here, so ``cxr data rehearse``
writes a stand-in: phantom radiographs (:mod:`cxrlib.data.phantoms`, findings rendered) under
the published folder names, file names and metadata formats, so every adapter, config and
benchmark runs end to end offline, at 1 %, 10 % or 100 % of the real size. What each collection's
layout and metadata look like (folders, file names, columns, published counts) is in
:mod:`cxrlib.data.rehearse_layouts`; this module renders the images and writes the root.

Deterministic: every image's anatomy, pose and noise are seeded by (seed, collection, patient,
image name), so the same arguments give byte-identical files whatever the number of workers.
Images are rendered by worker processes on all cores with a tqdm progress bar.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np

from cxrlib.data.rehearse_layouts import (  # noqa: F401  (the layouts; public names kept importable here)
    COHEN_COLUMNS, FIGURE1_COLUMNS, FOLDERS, KERMANY_FOLDERS, MIN_GROUP, NIH_COLUMNS, Job, _code, plan_cohen,
    plan_figure1, plan_kermany, plan_nih, read_nih_labels, write_nih_metadata,
)
from cxrlib.io import read_json, write_bytes, write_json, write_text

MARKER = "rehearsal.json"  # in ROOT: the parameters and counts of the last rehearsal
# fork (Linux): no re-import of the caller's __main__ (scripts without a main guard work); the
# children run only NumPy/PIL code, never TensorFlow, so forking a process with TF threads is safe
_START = "fork" if sys.platform.startswith("linux") else "spawn"


def _vary(view: dict, rng: np.random.Generator) -> dict:
    """Positioning and exposure spread of a real collection (wider than the phantom defaults).

    With the generator's narrow source-domain ranges, 32x32 thumbnails of *different* phantom
    patients correlate above the 0.975 near-duplicate threshold (106 of 44,700 pairs measured at
    128 px), which real NIH images never do (max 0.963); with these ranges 1 of 44,700.
    """
    v = dict(view)
    v.update(zoom=rng.uniform(0.9, 1.4), sx=rng.uniform(-0.1, 0.1), sy=rng.uniform(-0.1, 0.15),
             rot=math.radians(rng.uniform(-7, 7)), gamma=rng.uniform(0.75, 1.7), k=rng.uniform(1.2, 2.0),
             lo=rng.uniform(0, 0.2), hi=rng.uniform(0.8, 1.0), inspiration=rng.uniform(-0.06, 0.05),
             border=rng.uniform(0.02, 0.08) if rng.random() < 0.3 else 0.0)
    return v


def render_job(job: Job, root: str, size: int, seed: int) -> int:
    """Render one phantom and write it atomically (PNG or JPEG by extension); returns bytes written."""
    from PIL import Image

    from cxrlib.data import phantoms

    domain = "source" if job.collection == "nih" else "target"
    anatomy = phantoms.sample_patient(np.random.default_rng([seed, _code(job.collection, job.patient)]), domain)
    rng = np.random.default_rng([seed, _code(job.collection, job.rel), 1])
    view = _vary(phantoms.sample_view(rng, domain, view=job.view), rng)
    img = phantoms.render_phantom(anatomy, view, job.findings, image_size=size,
                                  seed=_code(seed, job.collection, job.rel, 2), subtype=job.subtype).image
    buf = io.BytesIO()
    if job.rel.endswith(".png"):
        Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=4)
    else:
        Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=90)
    write_bytes(Path(root) / job.rel, buf.getvalue())
    return buf.tell()


# ----------------------------------------------------------------------------- driver
def rehearse(root: str | os.PathLike, collections: Sequence[str] = tuple(FOLDERS), scale: float = 0.01,
             size: int = 256, seed: int = 0, labels: str | os.PathLike | None = None,
             workers: int | None = None, progress: bool = True) -> dict:
    """Write a rehearsal root; returns ``{collection: {"folder", "images", "bytes"}}``.

    Args:
        root: output folder (collections go under their published names).
        collections: any of :data:`FOLDERS`.
        scale: fraction of each published collection (0 < scale <= 1).
        size: image side in pixels.
        seed: seed of everything drawn.
        labels: NIH ``Data_Entry_2017_v2020.csv[.gz]`` (required for ``nih``); the box list is
            read from ``BBox_List_2017.csv[.gz]`` beside it when present.
        workers: rendering processes (default: all cores).
        progress: tqdm progress bar.

    Raises:
        ValueError: unknown collection, bad scale/size, or a collection folder that exists
            and was not written by a rehearsal (never overwritten).
    """
    root = Path(root)
    unknown = [c for c in collections if c not in FOLDERS]
    if unknown:
        raise ValueError(f"unknown collection(s) {unknown}; known: {', '.join(FOLDERS)}")
    if not 0 < scale <= 1:
        raise ValueError(f"--scale must be in (0, 1], got {scale}")
    if size < 16:
        raise ValueError(f"--size must be at least 16 px, got {size}")
    if "nih" in collections and labels is None:
        raise ValueError("the nih collection needs --labels Data_Entry_2017_v2020.csv[.gz] (the official "
                         "NIH label file; ../shared/data/nih-chestxray14-labels-full/ on development machines)")
    marker = read_json(root / MARKER, default={})
    for c in collections:  # refuse to touch data we did not write, before any long work
        folder = root / FOLDERS[c]
        if folder.exists() and any(folder.iterdir()) and c not in marker.get("collections", {}):
            raise ValueError(f"{folder}: exists and was not written by cxr data rehearse; not overwriting")
    plans: dict[str, list[Job]] = {}
    texts: dict[Path, tuple[str, str]] = {}
    nih_rows = None
    if "nih" in collections:
        plans["nih"], nih_rows = plan_nih(read_nih_labels(labels), scale, seed)
    if "covid-chestxray" in collections:
        plans["covid-chestxray"], text = plan_cohen(scale, seed)
        texts[root / FOLDERS["covid-chestxray"] / "metadata.csv"] = (text, "utf-8")
    if "figure1" in collections:
        plans["figure1"], text = plan_figure1(scale, seed)
        texts[root / FOLDERS["figure1"] / "metadata.csv"] = (text, "latin-1")
    if "kermany" in collections:
        plans["kermany"] = plan_kermany(scale, seed)
    for c in plans:  # a rerun replaces our own earlier rehearsal of the collection
        shutil.rmtree(root / FOLDERS[c], ignore_errors=True)
    jobs = [j for c in plans for j in plans[c]]
    written = _render_all(jobs, root, size, seed, workers, progress)
    if nih_rows is not None:
        write_nih_metadata(root / FOLDERS["nih"], nih_rows, Path(labels))
    for path, (text, enc) in texts.items():
        write_text(path, text, encoding=enc)
    summary = {c: {"folder": FOLDERS[c], "images": len(js), "bytes": int(sum(written[j.rel] for j in js)),
                   "scale": scale, "size": size, "seed": seed} for c, js in plans.items()}
    marker_collections = dict(marker.get("collections", {}))
    marker_collections.update(summary)
    write_json(root / MARKER, {"collections": marker_collections,
                               "labels": Path(labels).name if labels else marker.get("labels")})
    return summary


def _render_all(jobs: list[Job], root: Path, size: int, seed: int, workers: int | None,
                progress: bool) -> dict[str, int]:
    """Render every job (worker processes on all cores); returns bytes per path."""
    from tqdm import tqdm

    workers = workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(jobs) // 32 + 1))
    chunk = 32
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    out: dict[str, int] = {}
    bar = tqdm(total=len(jobs), desc="rehearse", unit="img", disable=not progress, file=sys.stderr)
    if workers == 1:
        results = (list(map(lambda j: render_job(j, str(root), size, seed), c)) for c in chunks)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=get_context(_START))
        results = pool.map(_render_sizes, [(c, str(root), size, seed) for c in chunks])
    try:
        for c, sizes in zip(chunks, results):
            out.update({j.rel: s for j, s in zip(c, sizes)})
            bar.update(len(c))
    finally:
        bar.close()
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    return out


def _render_sizes(args) -> list[int]:
    jobs, root, size, seed = args
    return [render_job(j, root, size, seed) for j in jobs]


# ----------------------------------------------------------------------------- command line
def register_rehearse(subparsers) -> None:
    """Add ``cxr data rehearse`` to the ``cxr data`` sub-commands."""
    p = subparsers.add_parser("rehearse", help="phantom stand-in of the public collections in their published layouts")
    p.add_argument("root", help="output folder (collections under their published names)")
    p.add_argument("--collections", default="nih,covid-chestxray,figure1,kermany",
                   help=f"comma-separated, any of {','.join(FOLDERS)} (default all)")
    p.add_argument("--scale", type=float, default=0.01, help="fraction of the published size, e.g. 0.01, 0.1, 1")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", help="NIH Data_Entry_2017_v2020.csv[.gz] (BBox_List_2017.csv[.gz] read beside it)")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
    p.set_defaults(func=cmd_rehearse)


def cmd_rehearse(args: argparse.Namespace) -> int:
    """``cxr data rehearse``: print what was written; exit 2 with ``error: ...`` on bad input."""
    try:
        summary = rehearse(args.root, [c.strip() for c in args.collections.split(",") if c.strip()],
                           scale=args.scale, size=args.size, seed=args.seed, labels=args.labels,
                           workers=args.workers)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for c, s in summary.items():
        print(f"{c:16s} {s['images']:7d} images  {s['bytes'] / 1e6:8.1f} MB  {Path(args.root) / s['folder']}")
    return 0

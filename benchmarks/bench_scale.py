"""Scale benchmark of the data stage and the input pipeline on rehearsal NIH layouts (not a test).

Builds phantom stand-ins of NIH ChestX-ray14 in its published layout (``cxr data rehearse``,
real ``Data_Entry_2017_v2020.csv`` rows, whole patients) at about 1k, 4k and 16k images
(``--sizes``; 112120 on request), and measures per step, each size in fresh processes:

=============  ===============================================================================
adapter        ``nih.build_manifest`` of the layout (task nih14)
hashing        ``dedup.add_hashes`` with an empty fingerprint store (one decode per image, all
               cores); ``rehash`` = the same call again (store hit: nothing decoded)
duplicates     ``dedup.find_duplicates`` (thumbnails from the store, KD-tree + vectorised checks)
split          ``dedup.patient_groups`` + ``splits.kfold_split`` (5 folds, grouped by patient)
check          ``splits.check_leakage`` with the duplicate pairs, then ``images.scan_images``
cache          on-disk cache build (``make_dataset(cache=DIR)``), bytes per image and per pixel
epoch-memory   one epoch of ``make_dataset(cache='memory', shuffle=True)`` feeding a small Keras model
epoch-disk     the same from the on-disk cache; the ratio disk/memory is the streaming cost
=============  ===============================================================================

Printed per step and size: wall time, images/s, peak RSS of the process during the step
(sampled every 10 ms; ``+workers`` = largest worker process), and over the sizes the growth
exponent of the wall time (least-squares slope of log t on log n) and the extrapolation to
112,120 images, against the targets of issue 9: exponent <= 1.1; data stage (hashing +
duplicates + split + check) <= 15 min and <= 2 GB peak RSS at 112,120 images; cache <= 1
byte/pixel; epoch from disk >= 0.95 of the memory feed.

The rehearsal images are ``--image-px`` (default 256) px; the real NIH PNGs are 1024 px, whose
decode costs more: the hashing extrapolation is also given scaled by the measured per-image
fingerprint cost of the 16 full-resolution NIH PNGs of ``../shared/data/fullres-sample`` (when
present): the difference to a rehearsal image, times 112,120, over the cores, is added.

Usage::

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000,4000,16000] [--work /tmp/cxr-scale]
        [--image-px 256] [--cache-px 128] [--labels ../shared/data/nih-chestxray14-labels-full/...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO.parent / "shared" / "data" / "nih-chestxray14-labels-full" / "Data_Entry_2017_v2020.csv.gz"
FULLRES = REPO.parent / "shared" / "data" / "fullres-sample"
FULL_NIH = 112_120
DATA_STEPS = ("hashing", "duplicates", "split", "check")
TARGETS = dict(exponent=1.1, data_minutes=15.0, data_gb=2.0, bytes_per_pixel=1.0, disk_ratio=0.95)


class Peak:
    """Peak RSS of this process while the block runs (sampled /proc/self/statm)."""

    def __enter__(self):
        self.peak, self._stop = _rss(), False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _children_peak() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


# ----------------------------------------------------------------------------- child processes
def run_data(root: Path, store: Path) -> dict:
    """adapter, hashing, rehash, duplicates, split, check on one rehearsal root (no TensorFlow)."""
    from cxrlib.data import dedup, images, splits
    from cxrlib.data.adapters import nih

    out = {}
    with Peak() as p:
        df = nih.build_manifest(root / "nih-chestxray14").manifest
    out["adapter"] = (p.wall, p.peak, 0)
    df["path"] = "nih-chestxray14/" + df["path"]
    with Peak() as p:
        hashed = dedup.add_hashes(df, root, store=store, progress=True)
    out["hashing"] = (p.wall, p.peak, _children_peak())
    with Peak() as p:
        dedup.add_hashes(df, root, store=store)
    out["rehash"] = (p.wall, p.peak, 0)
    with Peak() as p:
        pairs = dedup.find_duplicates(hashed, root=root, store=store)
    out["duplicates"] = (p.wall, p.peak, 0)
    with Peak() as p:  # patients sharing a duplicate image are one group (as the data stage does)
        hashed["group"] = dedup.patient_groups(hashed, pairs)
        folds = splits.kfold_split(hashed, k=5, seed=0, group_col="group")
    out["split"] = (p.wall, p.peak, 0)
    with Peak() as p:
        problems = splits.check_leakage(folds, pairs)
        report = images.scan_images(folds, root, fingerprints=store)
    out["check"] = (p.wall, p.peak, 0)
    out["_info"] = dict(images=len(df), patients=int(df["patient_id"].nunique()), pairs=len(pairs),
                        leaks=len(problems), bad=len(report.bad))
    return out


def run_pipeline(root: Path, cache_dir: Path, px: int) -> dict:
    """cache build, one epoch from memory and from disk feeding a small model."""
    from cxrlib import runtime  # noqa: F401
    from cxrlib.data import pipeline as P
    from cxrlib.data.adapters import nih

    import tensorflow as tf

    df = nih.build_manifest(root / "nih-chestxray14").manifest
    df["path"] = "nih-chestxray14/" + df["path"]
    df["label"] = np.where(df["findings"] == "No Finding", "normal", "disease")
    classes = ("normal", "disease")
    kw = dict(image_size=px, channels=3, backbone="densenet121", batch_size=64, check=False, shuffle=True)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Input((px, px, 3)), tf.keras.layers.Conv2D(8, 3, strides=4),
                                 tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(2)])
    model.compile("sgd", tf.keras.losses.CategoricalCrossentropy(from_logits=True))
    out = {}
    with Peak() as p:
        disk = P.make_dataset(df, root, classes, cache=cache_dir, **kw)
    npy = max(cache_dir.glob("*.npy"), key=os.path.getmtime)
    out["cache"] = (p.wall, p.peak, 0)
    out["_info"] = dict(cache_bytes=npy.stat().st_size, pixels=len(df) * px * px, images=len(df))
    mem = P.make_dataset(df, root, classes, cache="memory", **kw)
    model.fit(mem.take(2), epochs=1, verbose=0)  # build and warm up
    for name, ds in [("epoch-memory", mem), ("epoch-disk", disk)] * 3:
        with Peak() as p:
            model.fit(ds, epochs=1, verbose=0)
        best = out.get(name)
        if best is None or p.wall < best[0]:  # best of three, alternating (the machine is shared)
            out[name] = (p.wall, p.peak, 0)
    return out


def fullres_cost(root: Path) -> float | None:
    """Median seconds of one fingerprint (read + decode + hashes + thumbnail) per file of ``root``."""
    from cxrlib.data.fingerprints import fingerprint

    files = sorted(f for f in root.rglob("*.png") if f.name[:8].isdigit())[:16] if root.is_dir() else []  # NIH names
    if not files:
        return None
    times = []
    for f in files:
        t = time.perf_counter()
        fingerprint(f)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


# ----------------------------------------------------------------------------- driver
def _child(kind: str, *args) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"child {kind} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def exponent(ns, ts) -> float:
    """Least-squares slope of log(t) on log(n)."""
    if len(ns) < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(np.maximum(ts, 1e-4)), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,4000,16000", help="NIH images per layout (112120 = full)")
    ap.add_argument("--work", default="/tmp/cxr-scale", help="folder of the rehearsal layouts and caches")
    ap.add_argument("--labels", default=str(LABELS), help="NIH Data_Entry_2017_v2020.csv[.gz]")
    ap.add_argument("--image-px", type=int, default=256, help="rehearsal image side")
    ap.add_argument("--cache-px", type=int, default=128, help="pipeline image side")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, root, extra = args.child[0], Path(args.child[1]), args.child[2:]
        res = run_data(root, Path(extra[0])) if kind == "data" else run_pipeline(root, Path(extra[0]), int(extra[1]))
        print(json.dumps(res))
        return

    from cxrlib.data.rehearse import rehearse

    work = Path(args.work)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"bench_scale: sizes {sizes}, rehearsal {args.image_px} px, pipeline {args.cache_px} px, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    results = {}
    for n in sizes:
        root = work / f"nih-{n}-{args.image_px}px"
        if not (root / "rehearsal.json").is_file():
            t = time.perf_counter()
            s = rehearse(root, ["nih"], scale=min(1.0, n / FULL_NIH), size=args.image_px, labels=args.labels)
            print(f"  rehearsal of {s['nih']['images']} images: {time.perf_counter() - t:.0f} s", flush=True)
        for old in (work / f"store-{n}").glob("*"):
            old.unlink()  # hashing must start cold
        data = _child("data", root, work / f"store-{n}")
        pipe = _child("pipeline", root, work / f"cache-{n}", args.cache_px)
        results[n] = {**data, **pipe, "_info": {**data.pop("_info"), **pipe.pop("_info")}}
        info = results[n]["_info"]
        print(f"  n={info['images']}: {info['patients']} patients, {info['pairs']} duplicate pairs, "
              f"{info['leaks']} leakage problems, {info['bad']} bad images; load {os.getloadavg()[0]:.1f}",
              flush=True)
    report(results, args, fullres_cost(FULLRES), fullres_cost(work / f"nih-{sizes[0]}-{args.image_px}px"))


def report(results: dict, args, cost_full: float | None, cost_rehearsal: float | None) -> None:
    ns = sorted(results)
    imgs = [results[n]["_info"]["images"] for n in ns]
    steps = [s for s in results[ns[0]] if not s.startswith("_")]
    print(f"\n{'step':14s}" + "".join(f"{'n=' + str(i):>30s}" for i in imgs) + f"{'exponent':>10s}{'at 112,120':>12s}")
    extrap = {}
    for s in steps:
        ts = [results[n][s][0] for n in ns]
        k = exponent(imgs, ts)
        at_full = ts[-1] * (FULL_NIH / imgs[-1]) ** (k if k == k else 1.0)
        extrap[s] = at_full
        cells = "".join(f"{t:8.2f}s {i / max(t, 1e-9):7.0f}/s {results[n][s][1] / 1e6:6.0f}MB"
                        + (f"+{results[n][s][2] / 1e6:.0f}" if results[n][s][2] else "").ljust(5)
                        for n, t, i in zip(ns, ts, imgs))
        flag = "" if (k <= TARGETS["exponent"] or s == "rehash") else "  > 1.1"
        print(f"{s:14s}{cells}{k:10.2f}{at_full:11.0f}s{flag}")
    data_s = sum(extrap[s] for s in DATA_STEPS)
    peak = [max(results[n][s][1] for s in DATA_STEPS) for n in ns]
    slope = np.polyfit(imgs, peak, 1) if len(ns) > 1 else [0, peak[0]]
    peak_full = slope[0] * FULL_NIH + slope[1]
    info = results[ns[-1]]["_info"]
    bpp = info["cache_bytes"] / info["pixels"]
    ratio = results[ns[-1]]["epoch-memory"][0] / results[ns[-1]]["epoch-disk"][0]
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    print(f"\ntargets (extrapolated to {FULL_NIH:,} images from the fitted power law; peak RSS linearly):")
    print(f"  data stage (hashing + duplicates + split + check): {data_s / 60:.1f} min at {args.image_px} px "
          f"(target <= {TARGETS['data_minutes']:.0f} min): {ok(data_s / 60 <= TARGETS['data_minutes'])}")
    if cost_full and cost_rehearsal:
        # the extra decode cost of a 1024 px file, spread over the worker processes
        scaled = data_s + FULL_NIH * (cost_full - cost_rehearsal) / (os.cpu_count() or 1)
        print(f"    with 1024 px NIH PNGs (fingerprint {cost_full * 1e3:.1f} ms vs {cost_rehearsal * 1e3:.1f} ms per "
              f"image, one core; the difference x {FULL_NIH:,} / {os.cpu_count()} cores added): "
              f"{scaled / 60:.1f} min (estimated): {ok(scaled / 60 <= TARGETS['data_minutes'])}")
    print(f"  data stage peak RSS: {peak_full / 1e9:.2f} GB (target <= {TARGETS['data_gb']:.0f} GB): "
          f"{ok(peak_full / 1e9 <= TARGETS['data_gb'])}")
    print(f"  cache: {info['cache_bytes'] / info['images']:,.0f} bytes/image = {bpp:.3f} bytes/pixel at "
          f"{args.cache_px} px (target <= 1): {ok(bpp <= TARGETS['bytes_per_pixel'] + 1e-3)}")
    print(f"  epoch from disk / from memory (images/s): {ratio:.2f} (target >= 0.95): {ok(ratio >= 0.95)}")
    bad = [s for s in steps if s != "rehash" and exponent(imgs, [results[n][s][0] for n in ns]) > TARGETS["exponent"]]
    print(f"  growth exponent <= {TARGETS['exponent']}: " + ("met for every step" if not bad else f"NOT met for {bad}"))
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} (2 cores, shared with other jobs)")


if __name__ == "__main__":
    main()

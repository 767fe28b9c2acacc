"""Manifest and split of the full NIH ChestX-ray14 table (112,120 rows), against baselines.

Lays out 112,120 empty files named from the official label file
(``../shared/data/nih-chestxray14-labels-full/Data_Entry_2017_v2020.csv.gz``) in the official
``images_001..012/images/`` layout in a temporary folder (the adapter reads names and the table,
never pixels), then measures, in this one process:

- ``baseline``: ``pandas.read_csv`` + ``to_csv`` of the same table (the floor of any manifest step),
- ``manifest``: ``cxr data manifest nih`` (adapter + atomic manifest write),
- ``split``: ``cxr data split --folds 5`` (read, StratifiedGroupKFold, leakage check, write),
- ``prepare``: the one preparation path (:func:`cxrlib.data.prepare.prepare`, paper A task,
  5 folds) without hashing (the files are empty): adapter, selection, validation, split, leakage,
- ``sklearn`` vs ``fast``: scikit-learn's StratifiedGroupKFold and cxrlib's subclass with the
  vectorised fold choice, on the same strata and groups (the folds must be identical).

Each figure is CPU seconds of this process (``time.process_time``: robust on a shared machine)
and wall seconds; the machine's load average is printed with them.

    python benchmarks/bench_data_prep.py [--layout DIR] [--labels CSV.GZ]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nih-chestxray14-labels-full" \
    / "Data_Entry_2017_v2020.csv.gz"


def layout(folder: Path, labels: Path) -> Path:
    """The official NIH layout with empty image files (reused when already there)."""
    table = folder / "Data_Entry_2017_v2020.csv"
    if not table.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(labels, "rb") as f:
            table.write_bytes(f.read())
        names = pd.read_csv(table, usecols=["Image Index"])["Image Index"]
        for i, name in enumerate(names):
            d = folder / f"images_{1 + i // 10000:03d}" / "images"
            if i % 10000 == 0:
                d.mkdir(parents=True, exist_ok=True)
            (d / name).touch()
    return folder


@contextlib.contextmanager
def timed(results: dict, key: str):
    c, w = time.process_time(), time.perf_counter()
    yield
    results[key] = (time.process_time() - c, time.perf_counter() - w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layout", type=Path, help="folder for the empty-file layout (default: a temp folder)")
    p.add_argument("--labels", type=Path, default=LABELS)
    args = p.parse_args()
    if not args.labels.is_file():
        raise SystemExit(f"{args.labels}: the full NIH label file is needed (../shared/data)")
    from cxrlib.data.adapters import nih
    from cxrlib.data.manifest import read_manifest, write_manifest
    from cxrlib.data.splits import _stratified_group_kfold, _strata, check_leakage, group_keys, kfold_split

    with tempfile.TemporaryDirectory() as tmp:
        root = layout(args.layout or Path(tmp) / "nih", args.labels)
        out = Path(tmp)
        res: dict = {}
        kfold_split(pd.DataFrame({"path": list("abcd"), "patient_id": list("abcd"), "source": "s",
                                  "label": list("xxyy")}), 2)  # warm-up: imports
        with timed(res, "baseline"):
            pd.read_csv(root / "Data_Entry_2017_v2020.csv", dtype=str, keep_default_na=False).to_csv(
                out / "copy.csv", index=False)
        with timed(res, "manifest"):
            m = nih.build_manifest(root).manifest
            write_manifest(m, out / "m.csv")
        with timed(res, "split"):
            df = read_manifest(out / "m.csv")
            df = kfold_split(df, 5, seed=0)
            assert not check_leakage(df)
            write_manifest(df, out / "s.csv")
        from cxrlib.data.prepare import Entry, Plan, prepare

        (Path(tmp) / "root").mkdir()
        (Path(tmp) / "root" / "nih-chestxray14").symlink_to(root.resolve())
        with timed(res, "prepare"):
            prepare(Plan(task="paper_a", target=[Entry("nih", "nih")], folds=5, dedup=False), Path(tmp) / "root")
        y, g = _strata(df, "label"), group_keys(df).to_numpy()
        from sklearn.model_selection import StratifiedGroupKFold

        with timed(res, "sklearn"):
            a = [t for _, t in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(y, y, g)]
        with timed(res, "fast"):
            b = [t for _, t in _stratified_group_kfold(5, 0).split(y, y, g)]
        same = all(np.array_equal(x, z) for x, z in zip(a, b))
    print(f"rows {len(m)}, patients {len(set(g))}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    base = res["baseline"][0]
    for key, (cpu, wall) in res.items():
        print(f"{key:9s} cpu {cpu:6.2f} s  wall {wall:6.2f} s  cpu/baseline {cpu / base:5.1f}x")
    print(f"fast StratifiedGroupKFold: {res['sklearn'][0] / res['fast'][0]:.1f}x less CPU than sklearn's, "
          f"identical folds: {same}")


if __name__ == "__main__":
    main()

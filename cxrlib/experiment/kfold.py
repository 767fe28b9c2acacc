"""Patient-grouped k-fold cross-validation of one stage config (:func:`cross_validate`).

Each fold is a stage directory ``fold<i>/`` (see :mod:`cxrlib.experiment.stage`); the
out-of-fold predictions and histories are stacked and summarised with
:mod:`cxrlib.comparison` (mean ± std over folds, ddof=1, as paper A reports its 5 folds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from cxrlib import evaluation
from cxrlib.comparison import aggregate_folds, stack
from cxrlib.data import manifest as mf
from cxrlib.data.taxonomy import is_multilabel
from cxrlib.experiment.config import resolve_config
from cxrlib.experiment.stage import run_stage
from cxrlib.io import write_csv, write_json


def _fold_manifest(cfg: dict, out: Path, k: int) -> str:
    """Manifest with a complete 'fold' column: the input one, or kfold_split's into out/."""
    df = mf.read_manifest(cfg["manifest"])
    if "fold" in df.columns and (df["fold"] != "").all() and df["fold"].nunique() == k:
        return cfg["manifest"]
    from cxrlib.data import splits

    path = out / "folds_manifest.csv"
    if path.is_file():
        return str(path)
    labelled = df
    if cfg["task"] not in ("normal_disease",) and not is_multilabel(cfg["task"]):
        labelled = df[df["label"] != ""]
    folded = splits.kfold_split(labelled.drop(columns=["fold"], errors="ignore"), k=k, seed=int(cfg["split_seed"]))
    folded["fold"] = folded["fold"].astype(str)
    mf.write_manifest(folded, path)
    return str(path)


def cross_validate(config: Mapping[str, Any], out_dir: str | os.PathLike, k: int = 5,
                   folds: Sequence[int] | None = None, overwrite: bool = False) -> pd.DataFrame:
    """Patient-grouped k-fold cross-validation of one stage config; each fold is a stage.

    Writes ``out_dir/fold<i>/`` (stage dirs), ``cv_metrics.csv`` (one row per fold),
    ``cv_summary.csv`` / ``cv_summary.json`` (mean ± std, ddof=1), ``predictions_all.csv``
    (every image's out-of-fold prediction, with its fold) and ``history_all.csv``.
    Finished folds are not retrained (resume).

    Args:
        config: stage config (its ``fold`` is ignored).
        out_dir: output directory.
        k: number of folds (when the manifest has no complete fold column, folds are made
            with :func:`cxrlib.data.splits.kfold_split` and saved as ``folds_manifest.csv``).
        folds: subset of folds to run (default all k).
        overwrite: retrain folds.

    Returns:
        The summary table (metric, mean, std, n, min, max, text).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = resolve_config(config, fold=None)
    manifest = _fold_manifest(cfg, out, k)
    rows, preds, hists = [], [], []
    for f in (folds if folds is not None else range(k)):
        fold_dir = out / f"fold{f}"
        m = run_stage({**dict(config), "manifest": manifest, "root": cfg["root"], "fold": int(f)}, fold_dir,
                      overwrite=overwrite)
        rows.append({"fold": int(f), **evaluation.scalar_metrics(m["test"]), "best_epoch": m["best_epoch"]})
        preds.append(({"fold": int(f)}, pd.read_csv(fold_dir / "predictions.csv", keep_default_na=False)))
        hists.append(({"fold": int(f)}, pd.read_csv(fold_dir / "history.csv")))
    wide = pd.DataFrame(rows)
    write_csv(out / "cv_metrics.csv", wide)
    summary = aggregate_folds(wide.drop(columns=["best_epoch"]))
    write_csv(out / "cv_summary.csv", summary)
    write_csv(out / "predictions_all.csv", stack(preds))
    write_csv(out / "history_all.csv", stack(hists))
    write_json(out / "cv_summary.json",
               {"k": k, "folds": [int(r["fold"]) for r in rows], "strategy": cfg["strategy"],
                "task": cfg["task"], "manifest": manifest,
                "summary": summary.set_index("metric")[["mean", "std", "n"]].to_dict("index")})
    return summary

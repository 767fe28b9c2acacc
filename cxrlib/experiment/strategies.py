"""Comparing finished strategy runs (stage or k-fold directories): :func:`compare_strategies`.

The math is :mod:`cxrlib.comparison`. Running several strategies on the same data is the plan
of ``cxr run`` (:mod:`cxrlib.report.plan`: one transfer notebook per strategy x fold, source
stages shared); the strategies themselves are the registry :mod:`cxrlib.strategies`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import pandas as pd

from cxrlib import evaluation
from cxrlib.comparison import aggregate_folds, paired_mcnemar, plot_learning_curves, stack
from cxrlib.experiment.stage import StageIncomplete
from cxrlib.io import read_json, write_csv

def _run_tables(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(predictions, history, per-fold metrics) of a stage dir or a k-fold dir."""
    if (d / "predictions_all.csv").is_file():
        return (pd.read_csv(d / "predictions_all.csv", keep_default_na=False),
                pd.read_csv(d / "history_all.csv"), pd.read_csv(d / "cv_metrics.csv"))
    if not (d / "metrics.json").is_file():
        raise StageIncomplete(f"{d}: neither a finished stage nor a finished cross-validation")
    m = read_json(d / "metrics.json")
    wide = pd.DataFrame([{"fold": m.get("fold") or 0, **evaluation.scalar_metrics(m["test"])}])
    return (pd.read_csv(d / "predictions.csv", keep_default_na=False),
            pd.read_csv(d / "history.csv").assign(fold=0), wide)


def compare_strategies(run_dirs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                       metric: str = "val_macro_f1") -> dict[str, pd.DataFrame]:
    """Compare strategies run on the same images: summary, paired McNemar tests, learning curves.

    Writes into ``out_dir``: ``comparison.csv`` (strategy, metric, mean, std, n),
    ``mcnemar.csv`` (every pair, exact binomial McNemar on the images both predicted,
    matched by path), ``learning_curves.csv`` (tidy: strategy, fold, epoch, metrics) and
    ``learning_curves.png`` (``metric`` per epoch, one line per strategy, mean and 95 % band
    over folds).

    Args:
        run_dirs: {strategy name: stage dir or k-fold dir}.
        out_dir: output directory.
        metric: history column for the learning-curve plot.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preds, hists, summaries = {}, [], []
    for name, d in run_dirs.items():
        p, h, wide = _run_tables(Path(d))
        preds[name] = p
        hists.append(({"strategy": name}, h))
        summaries.append(({"strategy": name}, aggregate_folds(wide)))
    comparison = stack(summaries)[["strategy", "metric", "mean", "std", "n", "text"]]
    mcn = paired_mcnemar(preds)
    curves = stack(hists)
    write_csv(out / "comparison.csv", comparison)
    write_csv(out / "mcnemar.csv", mcn)
    write_csv(out / "learning_curves.csv", curves)
    if metric in curves.columns:
        import matplotlib.pyplot as plt

        fig = plot_learning_curves(curves, metric, out / "learning_curves.png")
        plt.close(fig)
    return {"comparison": comparison, "mcnemar": mcn, "learning_curves": curves}

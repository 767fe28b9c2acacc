"""Comparing strategies over folds: the one home of the comparison math, as DataFrame functions.

Used by ``cxrlib.experiment`` (k-fold directories, ``compare_strategies``), by the report
(notebook ``04_cross_validation``, the summary tables of :mod:`cxrlib.report.results`) and by
the benchmarks. Nothing here reads or writes files.

- ``summarize(tidy, by=("strategy", "metric"))``: mean ± sample std (ddof=1) over folds, with
  n, min, max and a ``0.9013 ± 0.0014`` text (paper A, Basu et al. 2020, reports its 5-fold
  accuracy so).
- ``aggregate_folds(fold_metrics)``: the same from one wide row per fold.
- ``stack(parts)``: per-fold (or per-strategy) frames stacked with their key columns, e.g. the
  out-of-fold predictions of a k-fold run.
- ``paired_mcnemar(predictions)``: exact McNemar test for every pair of strategies on the images
  both predicted (matched by ``path``).
- ``plot_learning_curves(histories, metric)``: one line per strategy, mean and 95 % band over folds.
"""

from __future__ import annotations

import math
import os
from itertools import combinations
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib.evaluation import mcnemar, prob_classes, scalar_metrics
from cxrlib.io import atomic_path

SUMMARY_COLUMNS = ("mean", "std", "n", "min", "max", "text")


def _std(v: pd.Series) -> float:
    v = v.dropna()
    return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan


def summarize(tidy: pd.DataFrame, by: Sequence[str] = ("strategy", "metric"), value: str = "value") -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one value), n, min, max and text per group.

    Args:
        tidy: one row per (group..., fold) with the number in ``value``.
        by: group columns; groups keep their order of first appearance.
        value: the value column.

    Returns:
        DataFrame[*by, mean, std, n, min, max, text]; NaN values are left out of every statistic
        (``n`` counts the others).
    """
    by = list(by)
    if tidy.empty:
        return pd.DataFrame(columns=by + list(SUMMARY_COLUMNS))
    g = tidy.groupby(by, sort=False)[value]
    out = g.agg(mean="mean", std=_std, n="count", min="min", max="max").reset_index()
    out["n"] = out["n"].astype(int)
    out["text"] = [f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}"
                   for m, s, n in zip(out["mean"], out["std"], out["n"])]
    if len(by) > 1:  # first group column in order of appearance, the others sorted
        order = {k: i for i, k in enumerate(dict.fromkeys(tidy[by[0]]))}
        out = (out.assign(_o=out[by[0]].map(order)).sort_values(["_o"] + by[1:], kind="stable")
               .drop(columns="_o").reset_index(drop=True))
    return out


def aggregate_folds(fold_metrics: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """k-fold aggregation: mean ± sample std (ddof=1) per scalar metric.

    Args:
        fold_metrics: one metrics dict per fold (from
            :func:`cxrlib.evaluation.classification_metrics`), or a wide DataFrame with one row
            per fold and one column per metric (a ``fold`` column is ignored).

    Returns:
        DataFrame[metric, mean, std, n, min, max, text] with text like ``"0.9013 ± 0.0014"``
        (just the value when n = 1, std is then NaN).
    """
    wide = fold_metrics if isinstance(fold_metrics, pd.DataFrame) else pd.DataFrame(
        [scalar_metrics(m) for m in fold_metrics])
    wide = wide.select_dtypes("number").drop(columns=["fold"], errors="ignore")
    tidy = wide.melt(var_name="metric", value_name="value")
    return summarize(tidy, by=["metric"])


def stack(parts: Iterable[tuple[Mapping[str, Any], pd.DataFrame]]) -> pd.DataFrame:
    """Concatenate frames, each with its key columns added (``({"fold": 2}, predictions)``).

    Returns:
        One frame (empty when there are no parts).
    """
    frames = [df.assign(**dict(keys)) for keys, df in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def paired_mcnemar(predictions: Mapping[str, pd.DataFrame], classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Exact (binomial) McNemar test for every pair of strategies on the images both predicted.

    Args:
        predictions: {strategy: predictions (``path``, ``label``, ``pred``, ``prob_<class>``...)},
            e.g. the out-of-fold predictions of all folds stacked; matched on ``path``.
        classes: class order (default: the ``prob_`` columns of the first frame).

    Returns:
        DataFrame[a, b, n, a_only_correct, b_only_correct, both_wrong, both_correct, p_value,
        note]; a pair without common images has n = 0 and p_value NaN. Multi-label predictions
        (no ``label`` column) give no rows.
    """
    rows = []
    for a, b in combinations(predictions, 2):
        pa, pb = predictions[a], predictions[b]
        if "label" not in pa.columns:
            continue  # multi-label runs: no single-label McNemar
        names = list(classes) if classes is not None else prob_classes(pa)
        idx = {c: i for i, c in enumerate(names)}
        j = pa.merge(pb, on="path", suffixes=("_a", "_b"))
        if len(j) == 0:
            rows.append({"a": a, "b": b, "n": 0, "p_value": math.nan, "note": "no common test images"})
            continue
        r = mcnemar(j["label_a"].map(idx).to_numpy(), j["pred_a"].map(idx).to_numpy(),
                    j["pred_b"].map(idx).to_numpy())
        rows.append({"a": a, "b": b, **r, "note": f"{len(j)} common images (of {len(pa)}, {len(pb)})"})
    return pd.DataFrame(rows)


def plot_learning_curves(histories: Mapping[str, pd.DataFrame] | pd.DataFrame,
                         metric: str = "val_macro_f1", path: str | os.PathLike | None = None,
                         title: str | None = None):
    """Learning curves of several strategies on one plot (seaborn; folds -> mean and 95 % band).

    Args:
        histories: ``{strategy: history DataFrame}`` (history.csv of each run; may hold
            several folds stacked with a ``fold`` column), or one tidy DataFrame with columns
            strategy, epoch, <metric>.
        metric: history column to plot (``val_macro_f1``, ``val_loss``, ``val_accuracy`` ...).
        path: save the figure there (PNG/PDF, atomically) if given.
        title: plot title.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt  # no backend switch: notebooks keep their inline backend
    import seaborn as sns

    tidy = histories if isinstance(histories, pd.DataFrame) else stack(
        ({"strategy": s}, h) for s, h in histories.items())
    if metric not in tidy.columns:
        raise KeyError(f"metric {metric!r} not in histories; columns: {sorted(tidy.columns)}")
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=tidy, x="epoch", y=metric, hue="strategy", marker="o", ax=ax)
    ax.set_title(title or f"{metric} per epoch")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    return fig

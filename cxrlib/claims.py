"""The papers' claims as statistics: pure functions of the run's tidy tables (no files, no models).

Each function takes the tables that :mod:`cxrlib.report.results` gathers from a run and returns a
small DataFrame that a notebook displays and a test can check:

- ``metrics``: one row per (strategy, fold, metric) with ``value`` (test-set metrics of every
  transfer stage; ``results.collect_metrics``);
- ``histories``: every transfer stage's ``history.csv`` stacked with ``strategy`` and ``fold``
  (``results.gather_histories``): one row per epoch with ``val_macro_f1``, ``val_recall_<class>``.

The claims (and what the statistic is):

- **Paper A** (Basu et al. 2020, arXiv 2004.10507): domain extension transfer learning (DETL)
  beats training from scratch. :func:`paired_folds`: the per-fold difference DETL - scratch of a
  test metric on the same patient-grouped folds, its mean and sample standard deviation, a
  paired t-test and the exact Wilcoxon signed-rank test (scipy). With 5 folds the smallest
  two-sided Wilcoxon p is 2/32 = 0.0625, so only the t-test can reach 0.05; both are shown.
- **Paper B** (Bassi & Attux 2020, arXiv 2005.01578): twice transfer learning (ImageNet -> NIH
  ChestX-ray14 -> target) is ahead *early* in training. :func:`early_advantage`: the area under
  the first ``epochs`` epochs of the validation curve (normalised by the number of epochs, so it
  is the curve's mean height there, in the metric's units), per fold, and the paired
  difference with its spread over folds.
- **Paper B**, output neuron keeping (ONK): keeping the source's *Pneumonia* neuron for the
  target's pneumonia class. :func:`kept_class_advantage`: the same early area on the kept
  class's validation recall, ONK minus plain twice transfer, reported whatever its sign.

:func:`claims_table` runs the comparisons a config's ``claims_tests`` block asks for and returns
one row per claim (statistic, value, spread, p, direction found).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["paired_folds", "early_area", "early_advantage", "kept_class_advantage", "claims_table", "claims_markdown",
           "CLAIM_COLUMNS"]

CLAIM_COLUMNS = ["claim", "paper", "statistic", "a", "b", "metric", "n_folds", "mean_a", "mean_b",
                 "difference", "spread", "p_value", "test", "wins", "direction", "supported", "note"]


def _check_columns(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; have {list(df.columns)}")


def _check_strategies(df: pd.DataFrame, names: Iterable[str], what: str) -> None:
    have = set(df["strategy"])
    unknown = [n for n in names if n not in have]
    if unknown:
        raise ValueError(f"{what}: no rows for strategy {unknown}; the table has {sorted(have)}")


def _paired_stats(a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """Paired comparison of two per-fold Series indexed by fold (only common folds are used)."""
    common = a.index.intersection(b.index)
    x, y = a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)
    d = x - y  # [n_folds]
    n = int(len(d))
    out: dict[str, Any] = {"n_folds": n, "mean_a": float(np.mean(x)) if n else math.nan,
                           "mean_b": float(np.mean(y)) if n else math.nan,
                           "difference": float(np.mean(d)) if n else math.nan,
                           "spread": float(np.std(d, ddof=1)) if n > 1 else math.nan,
                           "wins": f"{int((d > 0).sum())}/{n}", "p_value": math.nan, "p_wilcoxon": math.nan,
                           "test": "", "note": "", "folds": [int(f) for f in common]}
    if n < 2:
        out["note"] = "one split: no spread and no paired test (run k-fold for them)"
        return out
    out["test"] = "paired t-test over folds"
    if np.allclose(d, d[0]):
        out["p_value"] = 0.0 if d[0] != 0 else 1.0  # no variation: t undefined, the sign is certain
        out["note"] = "identical difference in every fold"
    else:
        out["p_value"] = float(stats.ttest_rel(x, y).pvalue)
    if np.any(d != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(x, y, zero_method="zsplit").pvalue)
    return out


def _direction(diff: float, p: float, alpha: float) -> str:
    if not np.isfinite(diff):
        return "n/a"
    if diff == 0:
        return "no difference"
    word = "a > b" if diff > 0 else "a < b"
    if np.isfinite(p):
        return f"{word} ({'p < ' if p < alpha else 'not significant, p >= '}{alpha:g})"
    return word


def paired_folds(metrics: pd.DataFrame, a: str, b: str, metric: str = "accuracy",
                 alpha: float = 0.05) -> pd.DataFrame:
    """Strategy ``a`` vs ``b`` on a test metric, paired over the folds both ran.

    Args:
        metrics: tidy test metrics (columns strategy, fold, metric, value).
        a: the strategy the claim favours (e.g. ``domain_extension``).
        b: the baseline (e.g. ``scratch``).
        metric: a test metric (``accuracy``, ``macro_f1`` ...).
        alpha: significance level used for the ``direction`` wording.

    Returns:
        One row: n_folds, mean_a, mean_b, difference (mean of a - b over folds), spread (sample
        std of the per-fold differences), p_value (paired t-test), p_wilcoxon (exact Wilcoxon
        signed-rank), wins (folds where a > b), direction, per_fold (the differences).
    """
    _check_columns(metrics, ("strategy", "fold", "metric", "value"), "metrics table")
    sub = metrics[metrics["metric"] == metric]
    if sub.empty:
        raise ValueError(f"metrics table: no metric {metric!r}; have {sorted(set(metrics['metric']))}")
    _check_strategies(sub, (a, b), f"metric {metric!r}")
    va = sub[sub["strategy"] == a].groupby("fold")["value"].mean()
    vb = sub[sub["strategy"] == b].groupby("fold")["value"].mean()
    s = _paired_stats(va, vb)
    diffs = (va - vb).dropna()
    return pd.DataFrame([{"a": a, "b": b, "metric": metric, "statistic": f"test {metric}, paired over folds",
                          **{k: v for k, v in s.items() if k != "folds"},
                          "direction": _direction(s["difference"], s["p_value"], alpha),
                          "per_fold": ", ".join(f"{x:+.3f}" for x in diffs)}])


def early_area(histories: pd.DataFrame, metric: str = "val_macro_f1", epochs: int = 3) -> pd.DataFrame:
    """Area under the first ``epochs`` epochs of a validation curve, per strategy and fold.

    The area is the trapezoid integral over epochs 1..``epochs`` divided by the epochs spanned
    (with a single epoch: that epoch's value), i.e. the curve's mean height early in training, in
    the metric's own units. A model that starts from useful features has a larger area.

    Args:
        histories: stacked histories (columns strategy, fold, epoch, ``metric``).
        metric: history column (``val_macro_f1``, ``val_recall_pneumonia`` ...).
        epochs: how many first epochs (>= 1).

    Returns:
        Columns strategy, fold, area, epochs (epochs actually available).
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    _check_columns(histories, ("strategy", "fold", "epoch", metric), "histories table")
    rows = []
    for (strategy, fold), h in histories.groupby(["strategy", "fold"], sort=False):
        h = h.sort_values("epoch")
        first = h[h["epoch"] < h["epoch"].min() + int(epochs)]
        y = first[metric].to_numpy(float)  # [E]
        x = first["epoch"].to_numpy(float)
        area = float(y[0]) if len(y) == 1 else float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))
        rows.append({"strategy": strategy, "fold": int(fold), "area": area, "epochs": int(len(y))})
    return pd.DataFrame(rows, columns=["strategy", "fold", "area", "epochs"])


def early_advantage(histories: pd.DataFrame, a: str, b: str, metric: str = "val_macro_f1", epochs: int = 3,
                    alpha: float = 0.05) -> pd.DataFrame:
    """Early-training advantage of ``a`` over ``b``: difference of :func:`early_area`, paired over folds.

    Args:
        histories: stacked histories (strategy, fold, epoch, ``metric``).
        a: the strategy the claim favours (``twice``).
        b: the baseline (``imagenet``, which is scratch when ImageNet weights are offline).
        metric: validation curve.
        epochs: first epochs integrated.
        alpha: significance level for the ``direction`` wording.

    Returns:
        One row as :func:`paired_folds` (difference = mean over folds of area_a - area_b; spread
        = its sample std over folds).
    """
    areas = early_area(histories, metric, epochs)
    _check_strategies(areas, (a, b), f"histories ({metric})")
    s = _paired_stats(areas[areas["strategy"] == a].set_index("fold")["area"],
                      areas[areas["strategy"] == b].set_index("fold")["area"])
    return pd.DataFrame([{"a": a, "b": b, "metric": metric,
                          "statistic": f"area under the first {int(epochs)} epochs of {metric}",
                          **{k: v for k, v in s.items() if k != "folds"},
                          "direction": _direction(s["difference"], s["p_value"], alpha)}])


def kept_class_advantage(histories: pd.DataFrame, onk: str, base: str, kept_class: str = "pneumonia",
                         epochs: int = 2, alpha: float = 0.05) -> pd.DataFrame:
    """Output neuron keeping's effect: early area of the kept class's validation recall, ONK - base.

    The kept neuron starts with the source model's decision for that class, so any effect shows
    first on that class and early. The sign is reported as found: a negative value (the source's
    decision does not fit the target's class) is a result too.

    Args:
        histories: stacked histories with ``val_recall_<kept_class>``.
        onk: the strategy with output neuron keeping (``twice_onk``).
        base: the same transfer without it (``twice``).
        kept_class: the target class whose output neuron was kept.
        epochs: first epochs integrated.
        alpha: significance level for the ``direction`` wording.
    """
    col = f"val_recall_{kept_class}"
    if col not in histories.columns:
        raise ValueError(f"histories table: no column {col!r} (is {kept_class!r} a target class?)")
    return early_advantage(histories, onk, base, col, epochs, alpha).assign(
        statistic=f"area under the first {int(epochs)} epochs of the recall of the kept class {kept_class!r}")


_KINDS = {"paired_folds", "early_advantage", "kept_class_advantage"}


def claims_table(metrics: pd.DataFrame, histories: pd.DataFrame, specs: Iterable[Mapping[str, Any]],
                 alpha: float = 0.05) -> pd.DataFrame:
    """Evaluate a config's ``claims_tests``: one row per claim (see ``CLAIM_COLUMNS``).

    Each spec: ``{claim: text, paper: A|B, kind: paired_folds|early_advantage|kept_class_advantage,
    a: strategy, b: strategy, metric: ..., epochs: ..., kept_class: ..., expect: greater|any}``.
    ``supported`` is True when the difference has the expected sign and (with ``expect:
    greater``) p < ``alpha``; with ``expect: any`` (ONK: reported whatever its sign) it is None.
    A spec naming a strategy the run did not train raises, naming the spec.
    """
    rows = []
    for i, spec in enumerate(specs):
        kind = spec.get("kind")
        if kind not in _KINDS:
            raise ValueError(f"claims_tests[{i}]: kind must be one of {sorted(_KINDS)}, got {kind!r}")
        a, b = spec.get("a"), spec.get("b")
        if not a or not b:
            raise ValueError(f"claims_tests[{i}] ({spec.get('claim', kind)}): needs strategies 'a' and 'b'")
        try:
            if kind == "paired_folds":
                r = paired_folds(metrics, a, b, spec.get("metric", "accuracy"), alpha)
            elif kind == "early_advantage":
                r = early_advantage(histories, a, b, spec.get("metric", "val_macro_f1"), int(spec.get("epochs", 3)),
                                    alpha)
            else:
                r = kept_class_advantage(histories, a, b, spec.get("kept_class", "pneumonia"),
                                         int(spec.get("epochs", 2)), alpha)
        except ValueError as exc:
            raise ValueError(f"claims_tests[{i}] ({spec.get('claim', kind)}): {exc}") from exc
        row = r.iloc[0].to_dict()
        expect = spec.get("expect", "greater")
        if expect not in ("greater", "any"):
            raise ValueError(f"claims_tests[{i}]: expect must be 'greater' or 'any', got {expect!r}")
        p, diff = row["p_value"], row["difference"]
        row["supported"] = None if expect == "any" else bool(diff > 0 and np.isfinite(p) and p < alpha)
        rows.append({**row, "claim": spec.get("claim", kind), "paper": spec.get("paper", "")})
    return pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS + ["p_wilcoxon", "per_fold"])


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def claims_markdown(table: pd.DataFrame) -> str:
    """A Markdown table of :func:`claims_table` for a notebook or the report index.

    Columns: claim, statistic, a vs b, difference ± spread (over folds), p (paired t-test),
    folds where a wins, and the verdict (``supported`` / ``not shown`` / ``reported``).
    """
    lines = ["| claim | statistic | a vs b | a − b (± sd over folds) | p | a ahead in | verdict |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        verdict = {True: "**supported**", False: "not shown"}.get(r["supported"], "reported (sign as found)")
        diff = f"{_fmt(r['difference'], '+.3f')} ± {_fmt(r['spread'])}"
        lines.append(f"| {r['claim']} | {r['statistic']} | {r['a']} vs {r['b']} ({_fmt(r['mean_a'])} vs "
                     f"{_fmt(r['mean_b'])}) | {diff} | {_fmt(r['p_value'], '.3g')} | {r['wins']} folds | {verdict} |")
    return "\n".join(lines)

"""External-validation tables: what a model does on a collection it never saw.

Internal test sets come from the same collections as the training images, so a model that
learnt the *collection* (scanner, hospital, burnt-in text, image format, age group) instead of
the disease scores well on them. DeGrave, Janizek & Lee (2021), "AI for radiographic COVID-19
detection selects shortcuts over signal", Nat. Mach. Intell. 3:610, showed that models trained
on such merged sets lose most of their accuracy on external hospitals. These tables make the
drop visible (all computed from predictions with scikit-learn / NumPy; bootstrap CIs as
:func:`cxrlib.evaluation.bootstrap_ci`, vectorised):

- :func:`collection_summary`: accuracy with its bootstrap 95 % CI, normal specificity,
  specificity of the positive class (``covid19``), counts.
- :func:`per_class_table`: per class held by the collection, one-vs-rest recall (sensitivity)
  and specificity with bootstrap CIs; NaN with a reason when undefined (never dropped).
- :func:`prediction_table`: for each class the collection holds, the fraction of its images
  predicted as each model class ("what does the model call these pediatric normals?").
- :func:`confusion`: confusion matrix (rows true, columns predicted) in the model's classes.
- :func:`gap_table`: internal (the stage's own test split) vs external per metric, and the gap.
- :func:`external_warnings`: sentences for the report when a threshold is crossed.

Definitions. ``normal_specificity`` is the fraction of the collection's *normal* images that
the model calls ``normal`` (the screening specificity: healthy people not sent on as sick).
``specificity_<c>`` is one-vs-rest: among images whose true class is not ``c``, the fraction
not predicted ``c`` (``specificity_covid19`` on a pediatric pneumonia set is the fraction not
called COVID-19).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from cxrlib.evaluation import resample_blocks



@dataclass(frozen=True)
class Thresholds:
    """When the external results get a warning in the report (all configurable).

    Attributes:
        min_normal_specificity: warn when fewer than this fraction of an external collection's
            normal images are called normal (default 0.5: most healthy people called sick).
        min_positive_specificity: warn when fewer than this fraction of an external
            collection's non-``positive`` images are *not* called ``positive`` (default 0.7; the
            pediatric probe of issue 10 gave 0.0).
        max_gap: warn when internal minus external accuracy, or a class's internal minus
            external recall, exceeds this (default 0.15 = 15 points).
        min_n: a rate computed on fewer images than this is reported but not judged
            (default 5; the warning says "too few images").
    """

    min_normal_specificity: float = 0.5
    min_positive_specificity: float = 0.7
    max_gap: float = 0.15
    min_n: int = 5

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "Thresholds":
        """Thresholds from a config mapping (unknown keys raise, naming them)."""
        cfg = dict(cfg or {})
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(cfg) - known)
        if bad:
            raise ValueError(f"external.thresholds: unknown key(s) {bad}; known: {sorted(known)}")
        return cls(**cfg)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _indices(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    classes = list(classes)
    bad = sorted({str(v) for v in labels} - set(classes))
    if bad:
        raise ValueError(f"labels {bad} are not model classes {classes}")
    return np.array([classes.index(v) for v in labels], dtype=int)


def _rate_ci(hit: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """(estimate, low, high) of a proportion: the percentile bootstrap of
    :func:`cxrlib.evaluation.bootstrap_ci` (same resamples for the same seed, tested), vectorised
    because the external tables need it for every model x collection x class rate."""
    hit = np.asarray(hit, dtype=np.float64)
    n = len(hit)
    if n == 0:
        return math.nan, math.nan, math.nan
    if n_boot <= 0:
        return float(hit.mean()), math.nan, math.nan
    blocks = resample_blocks(np.random.default_rng(seed), n, n_boot)  # [b, n] index blocks
    stats = np.concatenate([hit[idx].mean(axis=1) for idx in blocks])  # [n_boot]
    return float(hit.mean()), float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def per_class_table(labels: Sequence[str], prob: np.ndarray, classes: Sequence[str],
                    n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One-vs-rest recall and specificity per model class, with bootstrap 95 % CIs.

    Args:
        labels: [N] true class names (each one of ``classes``).
        prob: [N, K] model outputs.
        classes: the model's K class names.
        n_boot: bootstrap resamples (0: no CI).
        seed: bootstrap seed.

    Returns:
        DataFrame[class, n, recall, recall_low, recall_high, n_negative, specificity,
        specificity_low, specificity_high, note]; ``recall`` is NaN (note says why) for a class
        the collection does not hold, ``specificity`` NaN when it holds nothing else.
    """
    t = _indices(labels, classes)
    p = np.asarray(prob).argmax(axis=1)
    rows = []
    for k, c in enumerate(classes):
        pos, neg = t == k, t != k
        r = _rate_ci(p[pos] == k, n_boot, seed)
        s = _rate_ci(p[neg] != k, n_boot, seed)
        notes = [m for m, cond in ((f"no {c} images: recall undefined", not pos.any()),
                                   (f"only {c} images: specificity undefined", not neg.any())) if cond]
        rows.append({"class": c, "n": int(pos.sum()), "recall": r[0], "recall_low": r[1], "recall_high": r[2],
                     "n_negative": int(neg.sum()), "specificity": s[0], "specificity_low": s[1],
                     "specificity_high": s[2], "note": "; ".join(notes)})
    return pd.DataFrame(rows)


def collection_summary(labels: Sequence[str], prob: np.ndarray, classes: Sequence[str],
                       positive: str = "covid19", n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy (bootstrap CI), normal specificity and positive-class specificity of one collection.

    Returns:
        {n, accuracy, accuracy_low, accuracy_high, n_normal, normal_specificity,
        normal_specificity_low/high, n_non_positive, positive_specificity (+ low/high),
        predicted: {class: fraction of all images predicted as it}}.
    """
    classes = list(classes)
    t = _indices(labels, classes)
    p = np.asarray(prob).argmax(axis=1)
    acc = _rate_ci(p == t, n_boot, seed)
    out: dict[str, Any] = {"n": int(len(t)), "accuracy": acc[0], "accuracy_low": acc[1], "accuracy_high": acc[2]}
    for key, cls, want_same in (("normal_specificity", "normal", True), ("positive_specificity", positive, False)):
        if cls not in classes:
            out.update({f"n_{key}": 0, key: math.nan, f"{key}_low": math.nan, f"{key}_high": math.nan})
            continue
        k = classes.index(cls)
        rows = t == k if want_same else t != k
        hit = (p[rows] == k) if want_same else (p[rows] != k)
        est = _rate_ci(hit, n_boot, seed)
        out.update({f"n_{key}": int(rows.sum()), key: est[0], f"{key}_low": est[1], f"{key}_high": est[2]})
    out["predicted"] = {c: float(np.mean(p == k)) if len(p) else math.nan for k, c in enumerate(classes)}
    return out


def prediction_table(labels: Sequence[str], prob: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Rows: classes the collection holds; columns: n and the fraction predicted as each class."""
    t = _indices(labels, classes)
    p = np.asarray(prob).argmax(axis=1)
    rows = []
    for k in sorted(set(t.tolist())):
        sel = p[t == k]
        rows.append({"true": classes[k], "n": int(len(sel)),
                     **{f"pred_{c}": float(np.mean(sel == j)) for j, c in enumerate(classes)}})
    return pd.DataFrame(rows, columns=["true", "n"] + [f"pred_{c}" for c in classes])


def confusion(labels: Sequence[str], prob: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Confusion matrix (scikit-learn), rows true, columns predicted, in ``classes`` order."""
    t = _indices(labels, classes)
    m = confusion_matrix(t, np.asarray(prob).argmax(axis=1), labels=list(range(len(classes))))
    return pd.DataFrame(m, index=pd.Index(list(classes), name="true"), columns=list(classes))


def internal_metrics(stage_metrics: Mapping[str, Any]) -> dict[str, float]:
    """Accuracy and per-class recall of a stage's own test split (``metrics.json['test']``)."""
    test = stage_metrics.get("test") or {}
    out = {"accuracy": float(test.get("accuracy", math.nan))}
    for c, v in (test.get("per_class") or {}).items():
        out[f"recall_{c}"] = float(v.get("recall", math.nan))
    return out


def gap_table(internal: Mapping[str, Mapping[str, float]], summaries: pd.DataFrame,
              per_class: pd.DataFrame) -> pd.DataFrame:
    """Internal vs external, per model, collection and metric.

    Args:
        internal: model -> :func:`internal_metrics`.
        summaries: rows of :func:`collection_summary` with ``model`` and ``collection``.
        per_class: rows of :func:`per_class_table` with ``model`` and ``collection``.

    Returns:
        DataFrame[model, collection, metric, internal, external, n, gap] with
        ``gap = internal - external`` (positive: worse outside); only metrics the collection
        can measure (a recall of a class it does not hold is left out, it is NaN in per_class).
    """
    rows = []
    for r in summaries.to_dict("records"):
        ref = internal.get(r["model"], {})
        rows.append({"model": r["model"], "collection": r["collection"], "metric": "accuracy",
                     "internal": ref.get("accuracy", math.nan), "external": r["accuracy"], "n": r["n"]})
    for r in per_class.to_dict("records"):
        if r["n"] == 0:
            continue
        ref = internal.get(r["model"], {})
        rows.append({"model": r["model"], "collection": r["collection"], "metric": f"recall_{r['class']}",
                     "internal": ref.get(f"recall_{r['class']}", math.nan), "external": r["recall"], "n": r["n"]})
    out = pd.DataFrame(rows, columns=["model", "collection", "metric", "internal", "external", "n"])
    out["gap"] = out["internal"] - out["external"]
    return out


def external_warnings(summaries: pd.DataFrame, gaps: pd.DataFrame, thresholds: Thresholds = Thresholds(),
                      positive: str = "covid19") -> list[dict[str, Any]]:
    """Warnings for the report: low normal / positive-class specificity, large gaps.

    Returns:
        list of {model, collection, kind, value, threshold, n, message}; ``kind`` is
        ``normal_specificity``, ``positive_specificity``, ``gap:<metric>`` or ``too_few`` (a
        rate that would have been judged but rests on fewer than ``min_n`` images).
    """
    th = thresholds
    out = []

    def add(model, coll, kind, value, limit, n, text):
        if n < th.min_n:
            out.append({"model": model, "collection": coll, "kind": "too_few", "value": value, "threshold": limit,
                        "n": n, "message": f"{model} on {coll}: {text} (only {n} images: too few to judge)"})
        else:
            out.append({"model": model, "collection": coll, "kind": kind, "value": value, "threshold": limit,
                        "n": n, "message": f"{model} on {coll}: {text}"})

    for r in summaries.to_dict("records"):
        m, c = r["model"], r["collection"]
        v = r.get("normal_specificity", math.nan)
        if not math.isnan(v) and v < th.min_normal_specificity:
            add(m, c, "normal_specificity", v, th.min_normal_specificity, r["n_normal_specificity"],
                f"{v:.0%} of {r['n_normal_specificity']} external normal images called normal "
                f"(threshold {th.min_normal_specificity:.0%})")
        v = r.get("positive_specificity", math.nan)
        if not math.isnan(v) and v < th.min_positive_specificity:
            add(m, c, "positive_specificity", v, th.min_positive_specificity, r["n_positive_specificity"],
                f"{1 - v:.0%} of {r['n_positive_specificity']} non-{positive} images called {positive} "
                f"(specificity {v:.2f} < {th.min_positive_specificity})")
    for r in gaps.to_dict("records"):
        if not math.isnan(r["gap"]) and r["gap"] > th.max_gap:
            add(r["model"], r["collection"], f"gap:{r['metric']}", r["gap"], th.max_gap, r["n"],
                f"{r['metric']} {r['internal']:.2f} internal vs {r['external']:.2f} external "
                f"(gap {r['gap']:.2f} > {th.max_gap})")
    return out

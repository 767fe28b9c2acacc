"""Evaluation: metrics (scikit-learn), bootstrap CIs, McNemar, prediction tables.

API (stable):

- ``classification_metrics(y_true, y_prob, classes, positive="covid19") -> dict`` (single label)
- ``multilabel_metrics(y_true, y_prob, classes) -> dict`` (per-finding AUROC, NIH source task)
- ``per_class_table(metrics) -> DataFrame`` (tidy: class, precision, recall, f1, support, auc)
- ``epoch_metrics(y_true, y_prob, classes, multi_label, prefix) -> dict`` (the per-epoch log)
- ``bootstrap_ci(y_true, y_prob, metric, n_boot=1000, seed=0, alpha=0.05) -> dict``
- ``resample_blocks(rng, n, n_boot)``: its resamples as index blocks, for vectorised statistics
- ``mcnemar(y_true, pred_a, pred_b) -> dict`` (exact binomial McNemar)
- ``predictions_frame(df, y_prob, classes)``, ``read_predictions(path)``
- ``cross_entropy(y_true, y_prob, multi_label)``, ``safe_name(class)`` (log keys)

This module sits below :mod:`cxrlib.training` (which imports it) and imports nothing from
cxrlib; files are written with :mod:`cxrlib.io`.

Targets: ``y_true`` is one-hot/multi-hot ``[N, K]`` or integer class indices ``[N]``;
``y_prob`` is ``[N, K]`` model outputs. Metrics whose value is undefined on the data (AUC of a
class absent from ``y_true``) are NaN and named in ``metrics["undefined"]`` with the reason,
never silently dropped.

Comparing strategies over folds (mean ± std, McNemar over strategy pairs, learning curves) is
:mod:`cxrlib.comparison`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm


METRIC_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda t, p: skm.accuracy_score(t, p),
    "macro_f1": lambda t, p: skm.f1_score(t, p, average="macro", zero_division=0),
    "weighted_f1": lambda t, p: skm.f1_score(t, p, average="weighted", zero_division=0),
    "balanced_accuracy": lambda t, p: skm.balanced_accuracy_score(t, p),
}


def to_indices(y: np.ndarray) -> np.ndarray:
    """Class indices [N] from one-hot [N, K] (argmax) or from indices [N]."""
    y = np.asarray(y)
    return y.argmax(axis=1) if y.ndim == 2 else y.astype(int)


def classification_metrics(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str],
                           positive: str | None = "covid19") -> dict[str, Any]:
    """Single-label metrics of softmax outputs.

    Args:
        y_true: one-hot [N, K] or class indices [N].
        y_prob: probabilities [N, K].
        classes: class names in output order.
        positive: class whose sensitivity/specificity (one vs rest) are reported
            (``covid19``); skipped when not in ``classes``.

    Returns:
        dict with n, accuracy, balanced_accuracy, macro_f1, weighted_f1, macro_precision,
        macro_recall, per_class {class: {precision, recall, f1, support, auc}},
        confusion_matrix (rows true, columns predicted, in ``classes`` order),
        macro_auc_ovr, sensitivity_<positive>, specificity_<positive>, undefined.
    """
    classes = list(classes)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    t = to_indices(y_true)
    p = y_prob.argmax(axis=1)
    labels = list(range(len(classes)))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    out: dict[str, Any] = {"n": int(len(t))}
    for name, fn in METRIC_FUNCS.items():
        out[name] = float(fn(t, p))
    out["macro_precision"] = float(np.mean(prec))
    out["macro_recall"] = float(np.mean(rec))
    undefined: dict[str, str] = {}
    per_class = {}
    for k, c in enumerate(classes):
        pos = t == k
        if pos.all() or not pos.any():
            auc = math.nan
            undefined[f"auc_{c}"] = "class absent from y_true" if not pos.any() else "only class in y_true"
        else:
            auc = float(skm.roc_auc_score(pos.astype(int), y_prob[:, k]))
        per_class[c] = {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
                        "support": int(sup[k]), "auc": auc}
    out["per_class"] = per_class
    aucs = [v["auc"] for v in per_class.values() if not math.isnan(v["auc"])]
    # macro OvR AUC over the classes present (= sklearn roc_auc_score(multi_class='ovr') when all are)
    out["macro_auc_ovr"] = float(np.mean(aucs)) if aucs else math.nan
    if len(aucs) < len(classes):
        undefined["macro_auc_ovr"] = f"averaged over the {len(aucs)} classes present in y_true"
    out["confusion_matrix"] = skm.confusion_matrix(t, p, labels=labels).tolist()
    if positive is not None and positive in classes:
        k = classes.index(positive)
        tp = int(np.sum((t == k) & (p == k)))
        fn = int(np.sum((t == k) & (p != k)))
        tn = int(np.sum((t != k) & (p != k)))
        fp = int(np.sum((t != k) & (p == k)))
        out[f"sensitivity_{positive}"] = tp / (tp + fn) if tp + fn else math.nan
        out[f"specificity_{positive}"] = tn / (tn + fp) if tn + fp else math.nan
        if tp + fn == 0:
            undefined[f"sensitivity_{positive}"] = f"no {positive} images in y_true"
        if tn + fp == 0:
            undefined[f"specificity_{positive}"] = f"only {positive} images in y_true"
    out["classes"] = classes
    out["undefined"] = undefined
    return out


def multilabel_metrics(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str],
                       threshold: float = 0.5) -> dict[str, Any]:
    """Multi-label metrics of sigmoid outputs (NIH 14 findings): per-finding AUROC.

    Args:
        y_true: multi-hot [N, K].
        y_prob: probabilities [N, K].
        classes: finding names.
        threshold: decision threshold for F1.

    Returns:
        dict with n, per_class {finding: {auc, f1, support}}, macro_auroc (mean over the
        findings with both labels present), macro_f1, undefined.
    """
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    pred = (y_prob >= threshold).astype(int)
    per_class, undefined = {}, {}
    for k, c in enumerate(classes):
        col = y_true[:, k]
        if col.min() == col.max():
            auc = math.nan
            undefined[f"auc_{c}"] = "all positive" if col.min() == 1 else "no positive image"
        else:
            auc = float(skm.roc_auc_score(col, y_prob[:, k]))
        per_class[c] = {"auc": auc, "f1": float(skm.f1_score(col, pred[:, k], zero_division=0)),
                        "support": int(col.sum())}
    aucs = [v["auc"] for v in per_class.values() if not math.isnan(v["auc"])]
    return {
        "n": int(len(y_true)),
        "per_class": per_class,
        "macro_auroc": float(np.mean(aucs)) if aucs else math.nan,
        "macro_f1": float(skm.f1_score(y_true, pred, average="macro", zero_division=0)),
        "classes": list(classes),
        "undefined": undefined,
    }


def cross_entropy(y_true: np.ndarray, y_prob: np.ndarray, multi_label: bool) -> float:
    """Mean cross-entropy as Keras computes it (probabilities clipped to [1e-7, 1-1e-7])."""
    p = np.asarray(y_prob, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64)
    if multi_label:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    p = np.clip(p / p.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7)
    return float(np.mean(-np.sum(y * np.log(p), axis=1)))


def safe_name(name: str) -> str:
    """A class name as a log/column key part (``recall_<name>``): non [A-Za-z0-9_-] -> ``_``."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


def epoch_metrics(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str],
                  multi_label: bool = False, prefix: str = "val_") -> dict[str, float]:
    """The per-epoch validation log: loss, accuracy, macro_f1, recall_<class> (+ macro_auroc).

    Args:
        y_true: one-hot / multi-hot [N, K].
        y_prob: outputs [N, K].
        classes: output names.
        multi_label: sigmoid outputs thresholded at 0.5.
        prefix: key prefix.
    """
    y_true = np.asarray(y_true)
    logs = {f"{prefix}loss": cross_entropy(y_true, y_prob, multi_label)}
    if multi_label:
        m = multilabel_metrics(y_true, y_prob, classes)
        pred = (np.asarray(y_prob) >= 0.5).astype(int)
        logs[f"{prefix}accuracy"] = float(np.mean(pred == y_true))
        logs[f"{prefix}macro_f1"] = m["macro_f1"]
        logs[f"{prefix}macro_auroc"] = m["macro_auroc"]
        rec = skm.recall_score(y_true.astype(int), pred, average=None, zero_division=0)
    else:
        t, p = to_indices(y_true), np.asarray(y_prob).argmax(axis=1)
        labels = list(range(len(classes)))
        logs[f"{prefix}accuracy"] = float(skm.accuracy_score(t, p))
        logs[f"{prefix}macro_f1"] = float(skm.f1_score(t, p, labels=labels, average="macro", zero_division=0))
        rec = skm.recall_score(t, p, labels=labels, average=None, zero_division=0)
    for c, r in zip(classes, rec):
        logs[f"{prefix}recall_{safe_name(c)}"] = float(r)
    return logs


def per_class_table(m: Mapping[str, Any]) -> pd.DataFrame:
    """Tidy per-class table of :func:`classification_metrics` / :func:`multilabel_metrics`."""
    return pd.DataFrame([{"class": c, **v} for c, v in m["per_class"].items()])


SCALAR_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_precision",
               "macro_recall", "macro_auc_ovr", "macro_auroc")


def scalar_metrics(m: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a metrics dict (plus per-class recall/f1/auc flattened)."""
    out = {k: float(v) for k, v in m.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"}
    for c, v in m.get("per_class", {}).items():
        for key in ("recall", "f1", "auc"):
            if key in v:
                out[f"{key}_{c}"] = float(v[key])
    return out


def bootstrap_ci(y_true: np.ndarray, y_prob: np.ndarray, metric: str | Callable = "accuracy",
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, float]:
    """Percentile bootstrap confidence interval of a metric on a test set.

    Args:
        y_true: one-hot [N, K] or indices [N].
        y_prob: probabilities [N, K] (argmax = prediction).
        metric: a key of ``METRIC_FUNCS`` or ``f(true_idx, pred_idx) -> float``.
        n_boot: bootstrap resamples (images drawn with replacement).
        seed: RNG seed.
        alpha: 0.05 gives a 95 % interval.

    Returns:
        {metric, estimate, low, high, n_boot, alpha}.
    """
    fn = METRIC_FUNCS[metric] if isinstance(metric, str) else metric
    t, p = to_indices(y_true), np.asarray(y_prob).argmax(axis=1)
    rng = np.random.default_rng(seed)
    n = len(t)
    if isinstance(metric, str) and metric in _FROM_CONFUSION:  # same resamples, no Python loop
        stats = _FROM_CONFUSION[metric](_resampled_confusion(t, p, rng, n_boot))
    else:
        stats = np.array([fn(t[idx], p[idx]) for idx in (rng.integers(0, n, n) for _ in range(n_boot))])
    return {"metric": metric if isinstance(metric, str) else getattr(metric, "__name__", "metric"),
            "estimate": float(fn(t, p)), "low": float(np.quantile(stats, alpha / 2)),
            "high": float(np.quantile(stats, 1 - alpha / 2)), "n_boot": int(n_boot), "alpha": alpha}


def resample_blocks(rng: np.random.Generator, n: int, n_boot: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` items as index blocks [b, n], ``n_boot`` rows in all.

    The rows are exactly the indices of ``n_boot`` successive ``rng.integers(0, n, n)`` calls
    (one stream, taken in blocks of about 16 MB), so vectorised statistics match the per-resample
    loop of :func:`bootstrap_ci` for the same seed.
    """
    per = max(1, 2_000_000 // max(n, 1))  # resamples per block
    for s in range(0, n_boot, per):
        yield rng.integers(0, n, size=(min(per, n_boot - s), n))  # [b, n]


def _resampled_confusion(t: np.ndarray, p: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Confusion counts [n_boot, K, K] (rows true, columns predicted) of ``n_boot`` resamples
    (:func:`resample_blocks`)."""
    n, k = len(t), int(max(t.max(initial=0), p.max(initial=0))) + 1
    out = []
    for idx in resample_blocks(rng, n, n_boot):  # [b, n]
        cell = (np.arange(len(idx))[:, None] * k + t[idx]) * k + p[idx]  # [b, n] flat (resample, true, pred)
        out.append(np.bincount(cell.ravel(), minlength=len(idx) * k * k).reshape(len(idx), k, k))
    return np.concatenate(out) if out else np.zeros((0, k, k), np.int64)


def _accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    """[B] accuracy of confusion counts [B, K, K] (``accuracy_score``)."""
    return np.trace(cm, axis1=1, axis2=2) / cm.sum(axis=(1, 2))


def _macro_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """[B] ``f1_score(average="macro", zero_division=0)`` of confusion counts [B, K, K]: the mean
    of 2 TP / (2 TP + FP + FN) over the classes present in the resample's truth or predictions."""
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)  # [B, K]
    denom = cm.sum(axis=2) + cm.sum(axis=1)  # [B, K] = 2 TP + FN + FP
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


# bootstrap_ci metrics computed from per-resample confusion counts (equal to METRIC_FUNCS, tested)
_FROM_CONFUSION = {"accuracy": _accuracy_from_confusion, "macro_f1": _macro_f1_from_confusion}


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test of two classifiers on the same test images.

    ``b`` = images A classifies correctly and B wrongly, ``c`` = the reverse. Under H0 (same
    error rate) ``b ~ Binomial(b + c, 1/2)``; the two-sided p-value is
    ``scipy.stats.binomtest(b, b + c, 0.5).pvalue`` (the exact form of McNemar's test, which
    statsmodels' ``mcnemar(exact=True)`` also computes; statsmodels is not a dependency).

    Args:
        y_true: true class indices [N] (or one-hot [N, K]).
        pred_a: predicted indices [N] (or probabilities [N, K]) of classifier A.
        pred_b: same for classifier B.

    Returns:
        {n, a_only_correct (b), b_only_correct (c), both_correct, both_wrong, p_value,
        accuracy_a, accuracy_b}.
    """
    from scipy.stats import binomtest

    t = to_indices(y_true)
    a, b_ = to_indices(pred_a), to_indices(pred_b)
    if not (len(t) == len(a) == len(b_)):
        raise ValueError(f"mcnemar: lengths differ (y_true {len(t)}, a {len(a)}, b {len(b_)})")
    ca, cb = a == t, b_ == t
    b = int(np.sum(ca & ~cb))
    c = int(np.sum(~ca & cb))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"n": int(len(t)), "a_only_correct": b, "b_only_correct": c,
            "both_correct": int(np.sum(ca & cb)), "both_wrong": int(np.sum(~ca & ~cb)),
            "p_value": p, "accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean())}


def predictions_frame(df: pd.DataFrame, y_prob: np.ndarray, classes: Sequence[str],
                      multi_label: bool = False) -> pd.DataFrame:
    """Tidy predictions: path, patient_id, label (or findings), prob_<class>..., pred.

    Args:
        df: the manifest rows that were predicted, in prediction order.
        y_prob: outputs [N, K].
        classes: output names.
        multi_label: sigmoid outputs (``pred`` = '|'-joined findings with prob >= 0.5).
    """
    y_prob = np.asarray(y_prob)
    if len(df) != len(y_prob):
        raise ValueError(f"{len(df)} manifest rows but {len(y_prob)} predictions")
    out = pd.DataFrame({"path": df["path"].to_numpy(), "patient_id": df["patient_id"].to_numpy()})
    out["label" if not multi_label else "findings"] = df["findings" if multi_label else "label"].to_numpy()
    for k, c in enumerate(classes):
        out[f"prob_{c}"] = y_prob[:, k]
    if multi_label:
        out["pred"] = ["|".join(c for c, v in zip(classes, row) if v >= 0.5) for row in y_prob]
    else:
        out["pred"] = [classes[i] for i in y_prob.argmax(axis=1)]
    return out


def prob_classes(df: pd.DataFrame) -> list[str]:
    """Class names of a predictions frame, in output order, from its ``prob_<class>`` columns."""
    return [c[len("prob_"):] for c in df.columns if c.startswith("prob_")]


def read_predictions(path: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """Read a predictions.csv: (frame, classes from the prob_* columns)."""
    df = pd.read_csv(path, keep_default_na=False)
    return df, prob_classes(df)

"""Evaluate trained stages on external collections; write the tables the report shows.

``evaluate_external(models, collections, root)`` predicts every collection with every model
(each model with its own stage's preprocessing, :mod:`cxrlib.predict`) and builds the tables of
:mod:`cxrlib.validation.metrics`. ``write_external(result, out_dir)`` writes them:

=========================  =============================================================
``external.json``          summary rows, warnings, thresholds, removed counts by reason
``summary.csv``            model, collection, n, accuracy (+ CI), normal / positive specificity
``per_class.csv``          model, collection, class, recall and specificity with CIs
``predicted.csv``          model, collection, true class, fraction predicted as each class
``gaps.csv``               internal vs external per metric, gap
``confusion.csv``          model, collection, true, predicted, count
``predictions.csv``        model, collection, path, label, prob_<class>..., pred
``removed.csv``            external rows removed before evaluation, with reasons
=========================  =============================================================

``evaluate_page(result, title)`` is the small HTML page of ``cxr evaluate``.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from cxrlib import io
from cxrlib.validation import metrics as M


@dataclass
class ExternalResult:
    summary: pd.DataFrame
    per_class: pd.DataFrame
    predicted: pd.DataFrame
    gaps: pd.DataFrame
    confusion: pd.DataFrame
    predictions: pd.DataFrame
    warnings: list[dict[str, Any]]
    thresholds: M.Thresholds
    removed: pd.DataFrame = field(default_factory=pd.DataFrame)

    def headline(self) -> pd.DataFrame:
        """model x collection accuracy ("0.62 [0.48, 0.75] (n=40)"), internal first."""
        if self.summary.empty:
            return pd.DataFrame()
        cell = self.summary.assign(text=[
            f"{a:.2f} [{lo:.2f}, {hi:.2f}] (n={n})" if lo == lo else f"{a:.2f} (n={n})"
            for a, lo, hi, n in zip(self.summary["accuracy"], self.summary["accuracy_low"],
                                    self.summary["accuracy_high"], self.summary["n"])])
        table = cell.pivot(index="model", columns="collection", values="text")
        internal = self.gaps[self.gaps["metric"] == "accuracy"].drop_duplicates("model").set_index("model")["internal"]
        table.insert(0, "internal", internal.reindex(table.index).map(lambda v: f"{v:.2f}" if v == v else ""))
        return table.reset_index()


def evaluate_external(models: Mapping[str, Any], collections: Mapping[str, pd.DataFrame],
                      root: str | os.PathLike, thresholds: M.Thresholds = M.Thresholds(),
                      positive: str = "covid19", n_boot: int = 1000, seed: int = 0,
                      removed: pd.DataFrame | None = None) -> ExternalResult:
    """Predict and tabulate every (model, collection) pair.

    Args:
        models: name -> stage folder, model file or :class:`cxrlib.predict.Predictor`.
        collections: name -> manifest rows (already free of training overlap, labels in the
            models' classes; see :func:`cxrlib.validation.collections.remove_training_overlap`).
        root: data root of the collections.
        thresholds: warning thresholds.
        positive: the class whose specificity is watched (``covid19``).
        n_boot: bootstrap resamples for the CIs (0: none).
        seed: bootstrap seed.
        removed: rows removed beforehand (kept in the result for the report).
    """
    from cxrlib.predict import Predictor, load_predictor, predict_frame, prediction_rows

    summ, pcs, preds, confs, pred_rows, internal = [], [], [], [], [], {}
    for mname, spec in models.items():
        pred = spec if isinstance(spec, Predictor) else load_predictor(spec)
        internal[mname] = M.internal_metrics(pred.metrics)
        for cname, df in collections.items():
            if len(df) == 0:
                continue
            prob = predict_frame(pred, df, root)  # [N, K]
            labels = df["label"].tolist()
            tag = {"model": mname, "collection": cname}
            summ.append({**tag, **M.collection_summary(labels, prob, pred.classes, positive, n_boot, seed)})
            pcs.append(M.per_class_table(labels, prob, pred.classes, n_boot, seed).assign(**tag))
            preds.append(M.prediction_table(labels, prob, pred.classes).assign(**tag))
            cm = M.confusion(labels, prob, pred.classes).stack().rename("count").reset_index()
            confs.append(cm.rename(columns={"level_1": "predicted"}).assign(**tag))
            rows = prediction_rows(df["path"].tolist(), prob, pred.classes)
            rows.insert(1, "label", labels)
            pred_rows.append(rows.assign(**tag))

    def cat(parts, first=("model", "collection")):
        if not parts:
            return pd.DataFrame(columns=list(first))
        d = pd.concat(parts, ignore_index=True)
        return d[list(first) + [c for c in d.columns if c not in first]]

    summary = cat([pd.DataFrame([s]).drop(columns=["predicted"]) for s in summ])
    per_class = cat(pcs)
    gaps = M.gap_table(internal, summary, per_class) if len(summary) else pd.DataFrame(
        columns=["model", "collection", "metric", "internal", "external", "n", "gap"])
    warns = M.external_warnings(summary, gaps, thresholds, positive) if len(summary) else []
    return ExternalResult(summary, per_class, cat(preds), gaps, cat(confs), cat(pred_rows), warns, thresholds,
                          removed if removed is not None else pd.DataFrame(columns=["collection", "reason"]))


def write_external(res: ExternalResult, out_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the tables of the module docstring into ``out_dir``; return ``external.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("summary", res.summary), ("per_class", res.per_class), ("predicted", res.predicted),
                     ("gaps", res.gaps), ("confusion", res.confusion), ("predictions", res.predictions),
                     ("removed", res.removed)):
        io.write_csv(out / f"{name}.csv", df)
    removed = (res.removed.groupby(["collection", "reason"]).size().rename("n").reset_index().to_dict("records")
               if len(res.removed) else [])
    return io.write_json(out / "external.json", {
        "summary": res.summary.to_dict("records"), "headline": res.headline().to_dict("records"),
        "warnings": res.warnings, "thresholds": res.thresholds.as_dict(), "removed": removed, **(extra or {})})


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—", border=0, classes="t")


def evaluate_page(res: ExternalResult, title: str, notes: list[str] = ()) -> str:
    """Small self-contained HTML page: headline, warnings, per-class, predicted, confusion."""
    warn = "".join(f"<li>{html.escape(w['message'])}</li>" for w in res.warnings) or "<li>none</li>"
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    parts = [f"<h1>{html.escape(title)}</h1>", f"<ul>{note}</ul>" if note else "",
             "<h2>Accuracy (bootstrap 95 % CI)</h2>", _table(res.summary),
             f"<h2>Warnings</h2><ul class='warn'>{warn}</ul>",
             "<h2>Per class: recall and specificity</h2>", _table(res.per_class),
             "<h2>What the model calls each class</h2>", _table(res.predicted),
             "<h2>Internal vs external</h2>", _table(res.gaps),
             "<h2>Confusion (rows true)</h2>", _table(res.confusion)]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table.t{border-collapse:collapse}"
             "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd}.warn li{color:#a00}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")

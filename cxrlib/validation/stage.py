"""The external-validation stage of a run (notebook ``07_external``), as library calls.

Config (``external:`` block of an experiment YAML; optional, absent = no external collections)::

    external:
      collections:                  # adapter + folder (+ task) as in data:, never trained on
        - {name: figure1, adapter: figure1, root: figure1-covid-chestxray-dataset, optional: true}
        - {name: kermany_normal, adapter: kermany, root: chest_xray, labels: [normal], optional: true}
      thresholds: {min_normal_specificity: 0.5, min_positive_specificity: 0.7, max_gap: 0.15, min_n: 5}
      bootstrap: 1000               # resamples for the CIs
      enrichment_threshold: 2.0     # shortcut verdict, see cxrlib.explain.shortcuts.shortcut_verdict
      effect_threshold: 0.2

What the stage does (each step one function here):

1. :func:`external_collections`: each collection through its adapter, minus every image and
   patient overlapping the run's training data (source + target manifests of ``01_data``);
   removed rows are kept with reasons.
2. :func:`trained_models`: every transfer stage of the run (each strategy on each fold).
3. :func:`cxrlib.validation.run.evaluate_external`: predictions and tables, warnings.
4. :func:`source_check`: can a logistic regression tell the training images' collection?
   (:func:`source_figure` draws it)
5. :func:`verdicts`: the shortcut verdict per explained model (heatmap audit + masking ablation
   of ``05_heatmaps`` + the external warnings).

``write_stage`` writes ``external.json`` (read by the index page) and the tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from cxrlib import io
from cxrlib.validation.collections import REMOVED_COLUMNS, load_collection, remove_training_overlap

EXTERNAL_STAGE = "07_external"
EXTERNAL_INFO = "external.json"


def external_block(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``external:`` block with defaults ({} when absent)."""
    block = dict(cfg.get("external") or {})
    block.setdefault("collections", [])
    block.setdefault("thresholds", {})
    block.setdefault("bootstrap", 1000)
    return block


def training_rows(info: Mapping[str, Any]) -> pd.DataFrame:
    """Every row the run trains, validates or selects on: target (all folds) + source manifests."""
    from cxrlib.data.manifest import read_manifest

    parts = [read_manifest(info[k]) for k in ("target", "source") if info.get(k)]
    return pd.concat(parts, ignore_index=True).fillna("")


def external_collections(cfg: Mapping[str, Any], data_root: str | os.PathLike, training: pd.DataFrame,
                         classes) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """{name: rows to evaluate} and every removed or skipped row with its reason."""
    collections, removed = {}, []
    for entry in external_block(cfg)["collections"]:
        name = entry.get("name") or entry.get("collection") or entry.get("adapter") or entry.get("root")
        df, skipped = load_collection(entry, data_root, cfg["task"], (cfg.get("data") or {}).get("datasets"))
        if len(skipped):
            removed.append(skipped.assign(collection=name))
        if df is None:
            continue
        kept, rem = remove_training_overlap(df, training, data_root, classes, collection=name)
        collections[name] = kept
        removed.append(rem)
    rem = pd.concat([r for r in removed if len(r)], ignore_index=True) if any(len(r) for r in removed) \
        else pd.DataFrame(columns=REMOVED_COLUMNS)
    return collections, rem


def trained_models(ctx) -> dict[str, Path]:
    """{``strategy`` or ``strategy/foldK``: its folder} of every finished fold (:func:`cxrlib.report.plan.fits`)."""
    from cxrlib.report.plan import fits

    return {f.key: f.path(ctx.run_dir) for f in fits(ctx.cfg) if (f.path(ctx.run_dir) / "metrics.json").is_file()}


def source_check(target: pd.DataFrame, root: str | os.PathLike, image_size: int = 32) -> dict[str, Any]:
    """The source classifier on the training target (``{}`` with a note when one source only)."""
    from cxrlib.explain.shortcuts import source_classifier_from_manifest

    counts = target["source"].value_counts()
    if len(counts) < 2:
        return {"note": f"one source ({counts.index[0]}): no source confounding to check"}
    try:  # up to 5 folds; fewer when a source has fewer patients, single-patient sources left out
        res = source_classifier_from_manifest(target, root, image_size=image_size, n_splits=5)
    except ValueError as exc:
        return {"note": f"source classifier not run: {exc}"}
    return {"accuracy": res.accuracy, "accuracy_std": res.accuracy_std, "balanced_accuracy": res.balanced_accuracy,
            "baseline": res.baseline, "n_images": res.n_images, "n_splits": res.n_splits, "counts": res.counts,
            "per_fold": res.per_fold, "warning": res.warning, "set_aside": res.set_aside}


def source_figure(source: Mapping[str, Any]):
    """Bar chart of :func:`source_check`: accuracy per CV fold against the majority baseline
    (left) and the training images per collection (right); None without a check."""
    import matplotlib.pyplot as plt

    if "accuracy" not in source:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8, 2.8), gridspec_kw={"width_ratios": [3, 2]})
    folds = source.get("per_fold") or [source["accuracy"]]
    ax.bar([f"fold {i}" for i in range(len(folds))], folds, color="tab:red")
    ax.axhline(source["baseline"], color="k", ls="--", label=f"majority baseline {source['baseline']:.2f}")
    ax.set(ylim=(0, 1), ylabel="accuracy", title=f"source classifier: {source['accuracy']:.2f} "
           f"± {source['accuracy_std']:.2f}")
    ax.legend(loc="lower right", fontsize=8)
    counts = source.get("counts") or {}
    bx.barh(list(counts), list(counts.values()), color="tab:gray")
    bx.set(xlabel="training images", title="per collection")
    fig.tight_layout()
    return fig


def verdicts(heatmap_dir: Path, external_warnings: list[dict] | None, fold: int, block: Mapping[str, Any]
             ) -> pd.DataFrame:
    """Shortcut verdict per explained model from ``05_heatmaps``'s tables (+ external warnings).

    The heatmap stage explains one fold's models, named by strategy; their external warnings
    are those of ``strategy/fold<fold>`` (or ``strategy`` on a hold-out split).
    """
    from cxrlib.explain.shortcuts import audit_summary, shortcut_verdict

    audit, ablation = heatmap_dir / "shortcut_audit.csv", heatmap_dir / "masked_accuracy.csv"
    if not audit.is_file() or not ablation.is_file():
        return pd.DataFrame(columns=["model", "verdict", "relevance", "effect", "external", "evidence"])
    thr = float(block.get("enrichment_threshold", 2.0))
    summary = audit_summary(pd.read_csv(audit, keep_default_na=False, na_values=[""]), threshold=thr)
    ext = None
    if external_warnings is not None:
        suffix = "" if fold == -1 else f"/fold{fold}"
        ext = [{**w, "model": w["model"][:-len(suffix)] if suffix else w["model"]} for w in external_warnings
               if not suffix or w["model"].endswith(suffix)]
    return shortcut_verdict(summary, pd.read_csv(ablation), ext, enrichment_threshold=thr,
                            effect_threshold=float(block.get("effect_threshold", 0.2)))


def write_stage(stage_dir: str | os.PathLike, result, source: Mapping[str, Any], verdict: pd.DataFrame) -> Path:
    """Tables of :func:`cxrlib.validation.run.write_external` + source check + verdicts."""
    from cxrlib.validation.run import write_external

    io.write_csv(Path(stage_dir) / "verdicts.csv", verdict)
    return write_external(result, stage_dir, extra={"source_classifier": dict(source),
                                                    "verdicts": verdict.to_dict("records")})

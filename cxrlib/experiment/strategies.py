"""Several strategies on the same target data, and their comparison.

- :func:`run_strategies`: the strategy variants of :data:`VARIANTS` on one target config,
  source stages shared between variants.
- :func:`compare_strategies`: summary, paired McNemar tests and learning curves of finished
  runs (the math is :mod:`cxrlib.comparison`).
"""

from __future__ import annotations

import math
import os
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from cxrlib import evaluation
from cxrlib.experiment.config import STAGE_DEFAULTS
from cxrlib.experiment.kfold import cross_validate
from cxrlib.experiment.stage import StageIncomplete, run_stage
from cxrlib.experiment.wrappers import run_source_stage
from cxrlib.io import read_json, write_csv

VARIANTS: dict[str, dict[str, Any]] = {
    "scratch": {"strategy": "scratch"},
    "imagenet": {"strategy": "imagenet"},
    "domain_extension": {"strategy": "domain_extension",
                         "source": {"task": "normal_disease", "init": "scratch"}},
    "twice": {"strategy": "twice", "source": {"task": "nih14", "init": "imagenet"}},
    "twice_onk": {"strategy": "twice", "keep_neurons": "default",
                  "source": {"task": "nih14", "init": "imagenet"}},
}


def run_strategies(strategies: Sequence[str], target_config: Mapping[str, Any],
                   source_config: Mapping[str, Any] | None, out_dir: str | os.PathLike,
                   cv: bool = True, k: int = 5, folds: Sequence[int] | None = None,
                   overwrite: bool = False) -> dict[str, Path]:
    """Run several strategy variants on the same target data (same folds / split).

    Source stages are shared: ``out_dir/source_<task>_<init>/`` is trained once and reused by
    every variant needing it. Each variant writes ``out_dir/<variant>/`` (a k-fold directory
    when ``cv``, else a stage directory).

    Args:
        strategies: names from ``VARIANTS``.
        target_config: stage config of the target task (manifest, task, backbone, train ...).
        source_config: stage config of the source stage (manifest of NIH-style data; may
            hold its own ``train``); needed for domain_extension / twice variants.
        out_dir: output directory.
        cv: k-fold cross-validation (``cross_validate``) instead of one split.
        k: folds.
        folds: subset of folds.
        overwrite: retrain.

    Returns:
        {variant: its output directory}.
    """
    out = Path(out_dir)
    dirs: dict[str, Path] = {}
    for name in strategies:
        if name not in VARIANTS:
            raise ValueError(f"unknown strategy variant {name!r}; choose from {', '.join(VARIANTS)}")
        v = VARIANTS[name]
        cfg = {**dict(target_config), "strategy": v["strategy"], "keep_neurons": v.get("keep_neurons"),
               "name": name}
        if "source" in v:
            if not source_config:
                raise ValueError(f"variant {name!r} needs source_config (NIH-style source manifest)")
            s = v["source"]
            src_dir = out / f"source_{s['task']}_{s['init']}"
            scfg = {key: val for key, val in dict(source_config).items() if key not in ("task", "strategy")}
            for key in ("backbone", "image_size", "channels"):
                scfg.setdefault(key, target_config.get(key, STAGE_DEFAULTS[key]))
            run_source_stage(scfg.pop("manifest"), src_dir, source_task=s["task"], init=s["init"],
                             overwrite=overwrite, **scfg)
            cfg["source_dir"] = str(src_dir)
        d = out / name
        if cv:
            cross_validate(cfg, d, k=k, folds=folds, overwrite=overwrite)
        else:
            run_stage(cfg, d, overwrite=overwrite)
        dirs[name] = d
    return dirs


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
        hists.append(h.assign(strategy=name))
        summaries.append(evaluation.aggregate_folds(wide).assign(strategy=name))
    comparison = pd.concat(summaries, ignore_index=True)[["strategy", "metric", "mean", "std", "n", "text"]]
    tests = []
    for a, b in combinations(preds, 2):
        pa, pb = preds[a], preds[b]
        classes = [c[len("prob_"):] for c in pa.columns if c.startswith("prob_")]
        if "label" not in pa.columns:
            continue  # multi-label runs: no single-label McNemar
        j = pa.merge(pb, on="path", suffixes=("_a", "_b"))
        if len(j) == 0:
            tests.append({"a": a, "b": b, "n": 0, "p_value": math.nan, "note": "no common test images"})
            continue
        idx = {c: i for i, c in enumerate(classes)}
        r = evaluation.mcnemar(j["label_a"].map(idx).to_numpy(), j["pred_a"].map(idx).to_numpy(),
                               j["pred_b"].map(idx).to_numpy())
        tests.append({"a": a, "b": b, **r, "note": f"{len(j)} common images (of {len(pa)}, {len(pb)})"})
    mcn = pd.DataFrame(tests)
    curves = pd.concat(hists, ignore_index=True)
    write_csv(out / "comparison.csv", comparison)
    write_csv(out / "mcnemar.csv", mcn)
    write_csv(out / "learning_curves.csv", curves)
    if metric in curves.columns:
        import matplotlib.pyplot as plt

        fig = evaluation.plot_learning_curves(curves, metric, out / "learning_curves.png")
        plt.close(fig)
    return {"comparison": comparison, "mcnemar": mcn, "learning_curves": curves}

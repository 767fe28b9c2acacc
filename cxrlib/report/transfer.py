"""What notebook ``03_transfer`` does: train one strategy on each of its folds.

One notebook execution per strategy (:mod:`cxrlib.report.plan`); inside it, one
:mod:`cxrlib.experiment` training stage per fold, each in its :class:`~cxrlib.report.plan.Fit`
folder (``stages/03_transfer-scratch/fold2/``). A fold whose training stage finished with the same
config is read back, not trained again, so a rerun after an interruption resumes at the next fold.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from cxrlib.report.layout import set_aside_fold
from cxrlib.report.plan import HOLDOUT, Fit, fold_label, strategy_method, uses_source


def train_folds(ctx, strategy: str, folds: list[int], manifest: str = "target",
                log: Callable[[str], Any] = print) -> dict[int, dict[str, Any]]:
    """Train ``strategy`` on every fold of ``folds``; {fold: its ``metrics.json`` content}.

    Args:
        ctx: the notebook's :class:`cxrlib.report.notebook.StageContext`.
        strategy: a key of the config's ``strategies``.
        folds: test folds (k-fold) or ``[-1]`` (hold-out split).
        manifest: target manifest of ``01_data`` (``target``, or ``target_shortcut`` for the
            shortcut lesson).
        log: where the one line per fold goes.
    """
    from cxrlib.experiment import run_target_stage
    from cxrlib.report.datastage import load_data_info

    cfg, info = ctx.cfg, load_data_info(ctx.run_dir)
    options = ctx.stage_options("transfer", strategy)
    keep_neurons = options.pop("keep_neurons", None)
    method = strategy_method(strategy, cfg["strategies"][strategy])
    source_dir = ctx.stage_path("02_source_pretraining") if uses_source(strategy, cfg["strategies"][strategy]) else None
    k = cfg["split"].get("k")
    out: dict[int, dict[str, Any]] = {}
    for fold in folds:
        fit = Fit(strategy, int(fold), ctx.stage.id, ctx.stage.kind)

        def train() -> dict[str, Any]:
            return run_target_stage(method, str(ctx.stage_path("01_data") / f"{manifest}.csv"),
                                    fit.path(ctx.run_dir), fold=None if fold == HOLDOUT else int(fold),
                                    source_dir=source_dir, keep_neurons=keep_neurons, root=info["root"],
                                    task=cfg["task"], name=strategy, **options)

        try:
            metrics = train()  # a finished fold with the same config is read back
        except FileExistsError:  # a restored fold trained with other settings: keep it aside, retrain
            log(f"{strategy}, {fold_label(int(fold), k)}: the finished fold of an earlier attempt was trained "
                f"with other settings; kept in {set_aside_fold(fit.path(ctx.run_dir), ctx.run_dir)}, retraining")
            metrics = train()
        test = metrics["test"]
        log(f"{strategy}, {fold_label(int(fold), k)}: test accuracy {test['accuracy']:.3f}, "
            f"macro-F1 {test['macro_f1']:.3f}, best epoch {metrics['best_epoch']}, "
            f"{metrics['train_seconds']:.0f} s training")
        out[int(fold)] = metrics
    return out


def fold_table(results: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """One row per fold: test accuracy, macro-F1, macro AUC, best epoch, training seconds, sizes."""
    rows = []
    for fold, m in results.items():
        test = m["test"]
        rows.append({"fold": "hold-out" if fold == HOLDOUT else fold + 1, "test accuracy": test["accuracy"],
                     "test macro-F1": test["macro_f1"], "macro AUC (OvR)": test.get("macro_auc_ovr"),
                     "best epoch": m["best_epoch"], "train seconds": m["train_seconds"],
                     **{f"n {k}": v for k, v in m["n"].items()}})
    return pd.DataFrame(rows).set_index("fold")


def fold_histories(ctx, strategy: str) -> pd.DataFrame:
    """The strategy's folds' ``history.csv`` stacked with a ``fold`` column ([epochs x folds] rows;
    :func:`cxrlib.report.results.gather_histories` of this notebook's stage)."""
    from cxrlib.report.results import gather_histories

    return gather_histories(ctx.run_dir, ctx.cfg, kind=ctx.stage.kind, strategy=strategy)


def pooled_test(ctx, strategy: str) -> dict[str, Any]:
    """Test metrics of the folds' predictions pooled (:func:`cxrlib.evaluation.classification_metrics`
    of :func:`cxrlib.report.results.gather_predictions`).

    In k-fold every image is in exactly one test fold, so this is the out-of-fold score of the
    strategy: per-class precision/recall/F1, confusion matrix, COVID-19 sensitivity/specificity.
    """
    from cxrlib.evaluation import classification_metrics, prob_classes
    from cxrlib.report.results import gather_predictions

    df = gather_predictions(ctx.run_dir, ctx.cfg, kind=ctx.stage.kind, strategy=strategy)[strategy]
    classes = prob_classes(df)
    y_true = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()  # [N] class index
    y_prob = df[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)  # [N, C]
    return classification_metrics(y_true, y_prob, classes)

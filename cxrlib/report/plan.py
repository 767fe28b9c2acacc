"""Turn an experiment config into the ordered list of notebook executions (stages).

The flow reads as the experiment reads::

    01_data -> 02_source_pretraining -> 03_transfer (one per strategy x fold)
            -> 04_cross_validation -> 05_heatmaps -> 06_summary

``02_source_pretraining`` runs only when a strategy starts from the source model
(``domain_extension`` in paper A, ``twice`` in paper B). ``03_transfer`` fans out: every
strategy on every fold (k-fold) or on the single hold-out split is its own executed notebook,
so each can be resumed, inspected and rendered on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from cxrlib import strategies as registry
from cxrlib.report.shortcut import SHORTCUT_MANIFEST, SHORTCUT_PREFIX, shortcut_options

# Transfer methods whose starting point is the model trained by 02_source_pretraining.
SOURCE_METHODS: frozenset[str] = frozenset(registry.SOURCE_METHODS)

NOTEBOOKS: dict[str, str] = {
    "data": "01_data.ipynb",
    "source": "02_source_pretraining.ipynb",
    "transfer": "03_transfer.ipynb",
    "evaluation": "04_cross_validation.ipynb",
    "heatmaps": "05_heatmaps.ipynb",
    "summary": "06_summary.ipynb",
    "external": "07_external.ipynb",
}

HOLDOUT = -1  # the ``fold`` parameter of a transfer stage on a hold-out split


@dataclass(frozen=True)
class Stage:
    """One notebook execution of a run.

    Attributes:
        id: stage id, also its folder name (``03_transfer-scratch-fold2``).
        kind: ``data``, ``source``, ``transfer``, ``evaluation``, ``heatmaps`` or ``summary``.
        notebook: notebook file name under ``notebooks/``.
        params: papermill parameters specific to this stage (strategy, fold, ...).
        depends: ids of the stages whose outputs this one reads.
        label: what the progress line shows (``transfer scratch, fold 3/5``).
        weight: estimated cost in arbitrary units, for the remaining-time estimate.
    """

    id: str
    kind: str
    notebook: str
    params: dict[str, Any] = field(default_factory=dict)
    depends: tuple[str, ...] = ()
    label: str = ""
    weight: float = 1.0


def strategy_method(name: str, options: Mapping[str, Any] | None) -> str:
    """The transfer method of a strategy (:func:`cxrlib.strategies.method_of`).

    Args:
        name: strategy name as written in the config (``twice_onk``).
        options: the strategy's options (``{"strategy": "twice", "keep_neurons": "default"}``).
    """
    return registry.method_of(name, options)


def uses_source(name: str, options: Mapping[str, Any] | None) -> bool:
    """True when the strategy starts from the source-pretrained model."""
    return registry.uses_source(name, options)


def fold_ids(cfg: Mapping[str, Any]) -> list[int]:
    """Folds of the run: ``0..k-1`` for k-fold (``split.folds`` may pick a subset), else [-1]."""
    split = cfg["split"]
    if split["kind"] == "holdout":
        return [HOLDOUT]
    folds = split.get("folds")
    k = int(split["k"])
    chosen = list(range(k)) if folds in (None, "all") else [int(f) for f in folds]
    bad = [f for f in chosen if not 0 <= f < k]
    if bad:
        raise ValueError(f"split.folds: {bad} outside 0..{k - 1}")
    return chosen


def fold_label(fold: int, k: int | None) -> str:
    """Human name of a fold: ``fold 3/5`` (1-based) or ``hold-out``."""
    return "hold-out" if fold == HOLDOUT else f"fold {fold + 1}/{k}"


def _n_images(cfg: Mapping[str, Any], part: str) -> int:
    data = cfg.get("data", {})
    block = data.get(part, {}) if isinstance(data.get(part), Mapping) else {}
    return int(block.get("n", 500))


def _train_weight(cfg: Mapping[str, Any], section: str, part: str) -> float:
    # kernel start + TF import ~ 10 s of work; training ~ epochs x images.
    train = (cfg.get(section) or {}).get("train") or {}
    phases = train.get("phases")
    epochs = sum(int(p.get("epochs", 1)) for p in phases) if phases else int(train.get("epochs", 5))
    size = int((cfg.get("stage") or {}).get("image_size", 64))
    return 10.0 + epochs * _n_images(cfg, part) * (size / 64.0) ** 2 / 40.0


def build_plan(cfg: Mapping[str, Any]) -> list[Stage]:
    """Expand a resolved experiment config into stages in dependency order.

    Args:
        cfg: resolved config (see :func:`cxrlib.report.config.load_experiment`).
    """
    stages: list[Stage] = [
        Stage("01_data", "data", NOTEBOOKS["data"], label="data: manifests, splits, leakage",
              weight=10.0 + _n_images(cfg, "target") / 50.0)
    ]
    strategies: Mapping[str, Any] = cfg["strategies"]
    need_source = any(uses_source(n, o) for n, o in strategies.items())
    if need_source:
        stages.append(Stage("02_source_pretraining", "source", NOTEBOOKS["source"],
                            depends=("01_data",),
                            label=f"source pretraining ({(cfg.get('source') or {}).get('task', 'nih14')})",
                            weight=_train_weight(cfg, "source", "source")))
    k = cfg["split"].get("k")
    transfer_ids: list[str] = []
    for fold in fold_ids(cfg):
        for name, options in strategies.items():
            suffix = "holdout" if fold == HOLDOUT else f"fold{fold}"
            sid = f"03_transfer-{name}-{suffix}"
            deps = ("01_data", "02_source_pretraining") if uses_source(name, options) else ("01_data",)
            stages.append(Stage(sid, "transfer", NOTEBOOKS["transfer"],
                                params={"strategy": name, "fold": fold}, depends=deps,
                                label=f"transfer {name}, {fold_label(fold, k)}",
                                weight=_train_weight(cfg, "transfer", "target")))
            transfer_ids.append(sid)
    # The shortcut lesson (``shortcut_demo``, cxrlib.report.shortcut): one more 03_transfer
    # execution, trained like ``shortcut_demo.strategy`` on the text-shortcut twin of the target on
    # the heatmap fold. Its kind is ``shortcut``, not ``transfer``: it is a lesson, not a strategy,
    # so the comparison tables (which read ``transfer`` stages) never see it.
    shortcut = shortcut_stage(cfg, k)
    if shortcut is not None:
        stages.append(shortcut)
    stages.append(Stage("04_cross_validation", "evaluation", NOTEBOOKS["evaluation"],
                        depends=tuple(["01_data"] + transfer_ids),
                        label="evaluation: strategies compared", weight=12.0))
    summary_deps = ["04_cross_validation"]
    if cfg.get("heatmaps"):
        stages.append(Stage("05_heatmaps", "heatmaps", NOTEBOOKS["heatmaps"],
                            depends=tuple(["01_data"] + transfer_ids + ([shortcut.id] if shortcut else [])),
                            label="heatmaps: Grad-CAM / LRP, scores, shortcut audit",
                            weight=30.0 + 5.0 * int(cfg["heatmaps"].get("n_images", 8))))
        summary_deps.append("05_heatmaps")
    # external validation, source classifier and shortcut verdict: every real-data run, and any
    # run with an ``external:`` block (cxrlib.validation.stage)
    if cfg.get("external") or (cfg.get("data") or {}).get("kind") == "real":
        stages.append(Stage("07_external", "external", NOTEBOOKS["external"],
                            depends=tuple(["01_data"] + transfer_ids + (["05_heatmaps"] if cfg.get("heatmaps") else [])),
                            label="external validation, source classifier, shortcut verdict",
                            weight=10.0 + 2.0 * len(transfer_ids)))
    stages.append(Stage("06_summary", "summary", NOTEBOOKS["summary"], depends=tuple(summary_deps),
                        label="summary: papers' claims vs this run", weight=8.0))
    return stages



def shortcut_stage(cfg: Mapping[str, Any], k: int | None = None) -> Stage | None:
    """The shortcut lesson's transfer stage (``03_transfer-shortcut-<strategy>-<fold>``), or None.

    Trained like ``shortcut_demo.strategy`` on ``01_data``'s ``target_shortcut`` manifest, on the
    fold whose models notebook 5 explains (``heatmaps.fold``, default the first fold).
    """
    opts = shortcut_options(cfg)
    if opts is None:
        return None
    folds = fold_ids(cfg)
    fold = folds[0] if folds == [HOLDOUT] else int((cfg.get("heatmaps") or {}).get("fold", folds[0]))
    if fold not in folds:
        raise ValueError(f"heatmaps.fold={fold} is not a fold of this run ({folds})")
    name = opts["strategy"]
    suffix = "holdout" if fold == HOLDOUT else f"fold{fold}"
    deps = ("01_data", "02_source_pretraining") if uses_source(name, cfg["strategies"][name]) else ("01_data",)
    return Stage(f"03_transfer-{SHORTCUT_PREFIX}-{name}-{suffix}", SHORTCUT_PREFIX, NOTEBOOKS["transfer"],
                 params={"strategy": name, "fold": fold, "manifest": SHORTCUT_MANIFEST, "stage_kind": SHORTCUT_PREFIX},
                 depends=deps, label=f"shortcut lesson: {name} on the text-marked twin, {fold_label(fold, k)}",
                 weight=_train_weight(cfg, "transfer", "target"))

"""Turn an experiment config into the ordered list of notebook executions (stages).

The flow reads as the experiment reads::

    01_data -> 02_source_pretraining -> 03_transfer (one per strategy, a loop over folds)
            -> 04_cross_validation -> 05_heatmaps -> 06_summary

``02_source_pretraining`` runs only when a strategy starts from the source model
(``domain_extension`` in paper A, ``twice`` in paper B). ``03_transfer`` fans out by strategy:
each strategy is one executed notebook that trains it on every fold (k-fold) or on the hold-out
split, one training stage per fold in a sub-folder (a :class:`Fit`, ``03_transfer-scratch/fold2``).
A fold whose training stage finished is not trained again when the notebook reruns
(:mod:`cxrlib.experiment.stage`), so an interrupted strategy resumes at its next fold.
One notebook per strategy rather than per fold: a notebook execution costs a kernel start,
the imports and the HTML rendering (about 7 s of CPU here), which in the quick demo was more
than the training of a fold.

:func:`fits` is the one place that says where each trained target model lives; the tables
(:mod:`cxrlib.report.results`), the heatmaps and the external validation read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
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

HOLDOUT = -1  # the fold number of a transfer on a hold-out split


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


def folds_label(folds: list[int], k: int | None) -> str:
    """Human name of a stage's folds: ``5 folds``, ``fold 1/5`` or ``hold-out``."""
    if len(folds) == 1:
        return fold_label(folds[0], k)
    return f"{len(folds)} folds" if len(folds) == k else f"folds {', '.join(str(f + 1) for f in folds)} of {k}"


def fold_subdir(fold: int) -> str:
    """Sub-folder of a transfer stage holding one fold's training stage: ``fold2`` or ``holdout``."""
    return "holdout" if fold == HOLDOUT else f"fold{fold}"


@dataclass(frozen=True)
class Fit:
    """One trained target model of a run: a strategy on one fold.

    It lives in ``stages/<stage_id>/<fold2|holdout>/`` (model.h5, metrics.json, history.csv,
    predictions.csv, config.json: a :mod:`cxrlib.experiment` training stage).

    Attributes:
        strategy: strategy name of the config (``twice_onk``).
        fold: test fold, or :data:`HOLDOUT`.
        stage_id: the 03_transfer notebook stage that trains it.
        kind: ``transfer``, or ``shortcut`` for the shortcut lesson's model.
    """

    strategy: str
    fold: int
    stage_id: str
    kind: str = "transfer"

    @property
    def subdir(self) -> str:
        return fold_subdir(self.fold)

    @property
    def rel(self) -> str:
        """``03_transfer-scratch/fold2``: the folder under ``stages/``."""
        return f"{self.stage_id}/{self.subdir}"

    @property
    def key(self) -> str:
        """``strategy`` (hold-out) or ``strategy/foldK``."""
        return self.strategy if self.fold == HOLDOUT else f"{self.strategy}/{self.subdir}"

    def path(self, run_dir: str | os.PathLike) -> Path:
        return Path(run_dir) / "stages" / self.stage_id / self.subdir


def fits(cfg: Mapping[str, Any], kind: str = "transfer") -> list[Fit]:
    """Every trained target model of the run's plan (``kind`` ``shortcut``: the lesson's model).

    In plan order: strategies in the config's order, each on its folds.
    """
    return [Fit(s.params["strategy"], int(f), s.id, s.kind)
            for s in build_plan(cfg) if s.kind == kind for f in s.params["folds"]]


def _n_images(cfg: Mapping[str, Any], part: str) -> int:
    data = cfg.get("data", {})
    block = data.get(part, {}) if isinstance(data.get(part), Mapping) else {}
    return int(block.get("n", 500))


def _train_weight(cfg: Mapping[str, Any], section: str, part: str, fixed: float = 10.0) -> float:
    # ``fixed``: kernel start + TF import ~ 10 s of work (a fold inside a notebook: model build ~ 2 s);
    # training ~ epochs x images.
    train = (cfg.get(section) or {}).get("train") or {}
    phases = train.get("phases")
    epochs = sum(int(p.get("epochs", 1)) for p in phases) if phases else int(train.get("epochs", 5))
    size = int((cfg.get("stage") or {}).get("image_size", 64))
    return fixed + epochs * _n_images(cfg, part) * (size / 64.0) ** 2 / 40.0


def _transfer_depends(name: str, options: Mapping[str, Any] | None) -> tuple[str, ...]:
    """What a strategy's 03_transfer stage reads: the data, and the source model when it starts from it."""
    return ("01_data", "02_source_pretraining") if uses_source(name, options) else ("01_data",)


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
    folds = fold_ids(cfg)
    transfer_ids: list[str] = []
    for name, options in strategies.items():
        sid = f"03_transfer-{name}"
        deps = _transfer_depends(name, options)
        stages.append(Stage(sid, "transfer", NOTEBOOKS["transfer"],
                            params={"strategy": name, "folds": folds}, depends=deps,
                            label=f"transfer {name}, {folds_label(folds, k)}",
                            weight=len(folds) * _train_weight(cfg, "transfer", "target", fixed=2.0) + 8.0))
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
        # only the stages of the models it explains: it can start while other strategies still train
        explained = [f"03_transfer-{name}" for name in explained_strategies(cfg)]
        stages.append(Stage("05_heatmaps", "heatmaps", NOTEBOOKS["heatmaps"],
                            depends=tuple(["01_data"] + explained + ([shortcut.id] if shortcut else [])),
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



def explained_strategies(cfg: Mapping[str, Any]) -> list[str]:
    """Strategies whose models notebook 5 explains: ``heatmaps.strategies`` (default: all), then the
    shortcut lesson's clean model (``shortcut_demo.clean``) when it is not among them.

    Raises:
        ValueError: a name of ``heatmaps.strategies`` that is not a strategy of the config.
    """
    names = list((cfg.get("heatmaps") or {}).get("strategies") or list(cfg["strategies"]))
    unknown = [n for n in names if n not in cfg["strategies"]]
    if unknown:
        raise ValueError(f"heatmaps.strategies: {unknown} not among strategies {list(cfg['strategies'])}")
    lesson = shortcut_options(cfg)
    if lesson is not None and lesson["clean"] not in names:
        names.append(lesson["clean"])
    return names


def shortcut_stage(cfg: Mapping[str, Any], k: int | None = None) -> Stage | None:
    """The shortcut lesson's transfer stage (``03_transfer-shortcut-<strategy>``, one fold), or None.

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
    deps = _transfer_depends(name, cfg["strategies"][name])
    return Stage(f"03_transfer-{SHORTCUT_PREFIX}-{name}", SHORTCUT_PREFIX, NOTEBOOKS["transfer"],
                 params={"strategy": name, "folds": [fold], "manifest": SHORTCUT_MANIFEST, "stage_kind": SHORTCUT_PREFIX},
                 depends=deps, label=f"shortcut lesson: {name} on the text-marked twin, {fold_label(fold, k)}",
                 weight=_train_weight(cfg, "transfer", "target") + 8.0)

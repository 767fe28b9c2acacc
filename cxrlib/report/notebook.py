"""What a notebook of a run needs, in one call: config, folders, figure and table saving.

Every notebook starts with::

    ctx = open_stage(config_path, run_dir, stage_dir, data_root, kind="transfer",
                     strategy=strategy, folds=folds)

Under ``cxr run`` (papermill) the paths are injected. Opened by hand in JupyterLab the
parameters cell leaves ``run_dir`` empty: the context then uses the interactive run folder
``reports/interactive/<experiment>/<run>`` and first executes, with the same runner, every
stage this notebook depends on that has not run yet -- so any notebook runs on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from cxrlib.io import atomic_path, write_csv
from cxrlib.strategies import resolve as resolve_strategy
from cxrlib.report.config import load_experiment
from cxrlib.report.layout import register_figure
from cxrlib.report.plan import Stage, build_plan


@dataclass
class StageContext:
    """Paths and config of one executing stage.

    Attributes:
        cfg: the resolved experiment config.
        run_dir: the run folder.
        stage_dir: this stage's output folder.
        stage: this stage of the plan.
        data_root: root of the real datasets ('' for phantoms).
    """

    cfg: dict[str, Any]
    run_dir: Path
    stage_dir: Path
    stage: Stage
    data_root: str = ""

    def stage_path(self, stage_id: str) -> Path:
        """Output folder of another stage of the run."""
        return self.run_dir / "stages" / stage_id

    def plan(self) -> list[Stage]:
        return build_plan(self.cfg)

    def stage_options(self, section: str, strategy: str | None = None) -> dict[str, Any]:
        """Options for a cxrlib.experiment stage runner: ``stage`` + ``<section>`` (+ strategy).

        ``train`` mappings are merged key by key (a strategy can change only its schedule);
        a strategy's options start from its entry in :mod:`cxrlib.strategies`;
        keys that only the orchestration reads (``task``, ``init``, ``strategy``) are left out.

        Args:
            section: ``source`` or ``transfer``.
            strategy: a strategy name of ``strategies`` whose options are merged last.
        """
        from cxrlib.report.config import deep_merge

        opts = deep_merge(self.cfg.get("stage") or {}, self.cfg.get(section) or {})
        if strategy is not None:  # the registry's defaults (cxrlib.strategies), then the YAML's
            opts = deep_merge(opts, resolve_strategy(strategy, self.cfg["strategies"].get(strategy)))
        for key in ("task", "init", "strategy", "exclude_target_patients"):
            opts.pop(key, None)
        return opts

    def save_figure(self, fig, name: str, caption: str = "", key: bool = False, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` and list it for the report.

        Args:
            fig: matplotlib Figure.
            name: file stem.
            caption: one-line caption for the index page.
            key: show it among the key figures on the index page.
            dpi: resolution.
        """
        path = self.stage_dir / "figures" / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        register_figure(self.stage_dir, path, caption, key)
        show_and_close(fig)
        return path

    def save_table(self, df, name: str) -> Path:
        """Write a DataFrame as ``<name>.csv`` in the stage folder (atomically)."""
        return write_csv(self.stage_dir / f"{name}.csv", df)


def show_and_close(fig) -> None:
    """Display a figure once in a notebook (whatever the matplotlib backend), then close it."""
    import matplotlib.pyplot as plt

    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(fig)
    except ImportError:
        pass
    plt.close(fig)


def find_stage(cfg: Mapping[str, Any], kind: str, **params: Any) -> Stage:
    """The stage of ``kind`` whose parameters match ``params`` (e.g. strategy and fold)."""
    for s in build_plan(cfg):
        if s.kind == kind and all(s.params.get(k) == v for k, v in params.items()):
            return s
    raise ValueError(f"no {kind} stage with {params} in experiment {cfg['name']!r}")


def open_stage(
    config_path: str,
    run_dir: str = "",
    stage_dir: str = "",
    data_root: str = "",
    kind: str = "data",
    smoke: bool = True,
    **params: Any,
) -> StageContext:
    """Open the context of a notebook stage (see the module docstring).

    Args:
        config_path: experiment YAML (interactive) or the run's resolved ``config.yaml``.
        run_dir: run folder; '' = interactive: run missing upstream stages first.
        stage_dir: this stage's output folder ('' = derived from the plan).
        data_root: root of real datasets ('' for phantoms).
        kind: the stage kind of the calling notebook.
        smoke: interactive only: use the config's CI-sized ``smoke:`` settings.
        **params: stage parameters identifying the stage (``strategy``, ``folds``).
    """
    if run_dir:
        cfg = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        stage = find_stage(cfg, kind, **params)
        sdir = Path(stage_dir) if stage_dir else Path(run_dir) / "stages" / stage.id
        sdir.mkdir(parents=True, exist_ok=True)
        return StageContext(cfg, Path(run_dir), sdir, stage, data_root)

    from cxrlib.report.locate import reports_root
    from cxrlib.report.runner import run_experiment

    cfg = load_experiment(config_path, smoke=smoke)
    stage = find_stage(cfg, kind, **params)
    out = reports_root() / "interactive"
    if stage.depends:
        result = run_experiment(cfg, out=out, data_root=data_root or None, only=list(stage.depends))
        rdir = result.run_dir
    else:
        from cxrlib.report.runner import prepare_run

        rdir, _, _ = prepare_run(cfg, out, data_root=data_root or None)
    sdir = rdir / "stages" / stage.id
    sdir.mkdir(parents=True, exist_ok=True)
    return StageContext(cfg, rdir, sdir, stage, data_root)

"""Run an experiment: config -> plan -> run folder -> scheduler -> index page.

The pieces, one job each: :mod:`~cxrlib.report.config` (YAML, overrides, hash),
:mod:`~cxrlib.report.plan` (stages), :mod:`~cxrlib.report.layout` (the run folder, its
``run.json``/``stage.json`` and resume rules), :mod:`~cxrlib.report.scheduler` (pending /
running / done), :mod:`~cxrlib.report.execute` (one notebook with papermill + nbconvert),
:mod:`~cxrlib.report.index` (the HTML page).

Runs never overwrite each other: a new run id is made unless a run of the *same config
hash* exists, in which case that run is resumed -- a stage whose ``stage.json`` has the same
stage hash (config, notebook file, upstream stages) and whose outputs all exist is skipped.
``force=True`` starts a new run and executes everything.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cxrlib.report import layout
from cxrlib.report.config import config_hash, load_experiment, save_config
from cxrlib.report.execute import check_kernel
from cxrlib.report.locate import notebooks_dir, packaged_experiments_dir
from cxrlib.report.plan import Stage, build_plan
from cxrlib.report.progress import Progress
from cxrlib.report.scheduler import Scheduler, run_many, select_stages

NOTEBOOKS_DIR = notebooks_dir()  # packaged notebooks (cxrlib/notebooks), see cxrlib.report.locate
EXPERIMENTS_DIR = packaged_experiments_dir()


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped (Ctrl-C): running notebooks were stopped, ``run.json`` says interrupted.

    Attributes:
        run_dir: the run folder (rerun the same command to resume it).
        stopped: ids of the stages that were running.
    """

    def __init__(self, run_dir: Path, stopped: list[str]):
        super().__init__(f"run {run_dir} interrupted")
        self.run_dir = run_dir
        self.stopped = stopped


class RunFailed(RuntimeError):
    """A notebook of the run failed; the message shows the failing cell and its error.

    Attributes:
        stage_id: the failed stage.
        notebook: the partially executed notebook that was kept.
        run_dir: the run folder.
    """

    def __init__(self, message: str, stage_id: str, notebook: Path, run_dir: Path):
        super().__init__(message)
        self.stage_id = stage_id
        self.notebook = notebook
        self.run_dir = run_dir


@dataclass
class RunResult:
    """What :func:`run_experiment` did."""

    run_dir: Path
    run_id: str
    config_hash: str
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return self.run_dir / "index.html"


def prepare_run(cfg: Mapping[str, Any], out: str | os.PathLike, run_id: str | None = None,
                force: bool = False, data_root: str | os.PathLike | None = None
                ) -> tuple[Path, bool, dict[str, Any]]:
    """Create (or reopen) the run folder with its ``config.yaml`` and ``run.json``.

    Returns:
        (run folder, True if resumed, the run.json record marked running).
    """
    run_dir, resumed = layout.choose_run_dir(Path(out).resolve(), cfg, run_id=run_id, force=force)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    info = layout.read_run(run_dir) or {
        "experiment": cfg["name"], "run_id": run_dir.name, "config_hash": config_hash(cfg),
        "created": layout.now_iso(), "smoke": bool(cfg.get("smoke")), "stages": {},
    }
    info.update(status="running", updated=layout.now_iso(), python=sys.executable,
                data_root=str(Path(data_root).resolve()) if data_root else "",
                plan=[s.id for s in build_plan(cfg)],
                labels={s.id: s.label for s in build_plan(cfg)})
    layout.write_run(run_dir, info)
    layout.update_latest_link(run_dir)
    return run_dir, resumed, info


def run_experiment(
    config: str | os.PathLike | Mapping[str, Any],
    out: str | os.PathLike = "reports",
    data_root: str | os.PathLike | None = None,
    smoke: bool = False,
    force: bool = False,
    run_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    only: Iterable[str] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    stream=None,
    jobs: int = 1,
) -> RunResult:
    """Execute an experiment's notebooks in dependency order and write its HTML report.

    Args:
        config: experiment YAML path (or an already resolved config mapping).
        out: reports root; the run goes to ``out/<name>/<run_id>/``.
        data_root: root of the real datasets (``data.kind: real``); ignored for phantoms.
        smoke: apply the config's ``smoke:`` overrides (CI-sized run).
        force: start a new run and execute every stage.
        run_id: resume or create this run id instead of choosing one.
        overrides: dotted config keys -> values applied after loading.
        only: run only stages whose id starts with one of these (and their dependencies).
        notebooks_dir: folder of the source notebooks (default: the packaged ones).
        stream: where progress goes (default stderr).
        jobs: notebooks executed at the same time (independent stages only, e.g. the
            strategies of the transfer fan-out). On 2 cores, 2 helps small stages, whose time is
            mostly single-threaded start-up and graph building.

    Raises:
        RunInterrupted: Ctrl-C; running notebooks were stopped, finished stages are kept and
            ``run.json`` says ``interrupted``.
        RunFailed: a notebook failed; no new stage starts, stages already running finish,
            the failed notebook (partially executed) and its HTML are kept.
    """
    return run_experiments([config], out=out, data_root=data_root, smoke=smoke, force=force, run_id=run_id,
                           overrides=overrides, only=only, notebooks_dir=notebooks_dir, stream=stream,
                           jobs=jobs)[0]


def run_experiments(configs: Sequence[str | os.PathLike | Mapping[str, Any]], out: str | os.PathLike = "reports",
                    data_root: str | os.PathLike | None = None, smoke: bool = False, force: bool = False,
                    run_id: str | None = None, overrides: Mapping[str, Any] | None = None,
                    only: Iterable[str] | None = None, notebooks_dir: str | os.PathLike | None = None,
                    stream=None, jobs: int = 1) -> list[RunResult]:
    """Several experiments side by side, ``jobs`` notebooks at a time in all (``cxr demo``).

    Each experiment is its own run folder and report, exactly as :func:`run_experiment` makes
    it; they only share the notebook slots (:func:`cxrlib.report.scheduler.run_many`), so while
    one waits on its longest chain (source pretraining, then a strategy's folds) the other
    uses the free core. Progress lines start with the experiment's name. Arguments as
    :func:`run_experiment` (applied to every experiment).

    Raises:
        RunInterrupted: Ctrl-C (every run's running notebooks stopped and recorded).
        RunFailed: the first run with a failed notebook, after every run finished what it could.
    """
    # every config is loaded and checked (plan, notebooks, --data, kernel) before any run folder
    # is made or marked running: a bad second experiment leaves no prepared first run behind
    cfgs = [dict(c) if isinstance(c, Mapping) else load_experiment(c, smoke=smoke, overrides=overrides)
            for c in configs]
    checked = [_Run.check(cfg, data_root, only, notebooks_dir) for cfg in cfgs]
    runs = [_Run.open(cfg, out=out, data_root=data_root, force=force, run_id=run_id, only=only,
                      notebooks_dir=notebooks_dir, stream=stream, name_lines=len(cfgs) > 1, checked=c)
            for cfg, c in zip(cfgs, checked)]
    try:
        run_many([r.scheduler for r in runs], jobs)
    except KeyboardInterrupt:
        stopped = [sid for r in runs for sid, rec in r.info["stages"].items() if rec.get("status") == "interrupted"]
        raise RunInterrupted(runs[0].run_dir if len(runs) == 1 else Path(out).resolve(), stopped) from None
    results, failed = [], []
    for r in runs:
        try:
            results.append(r.close())
        except RunFailed as exc:
            failed.append(exc)
    if failed:
        raise failed[0]
    return results


@dataclass
class _Run:
    """One experiment's run folder with its scheduler, between :meth:`open` and :meth:`close`."""

    cfg: dict[str, Any]
    run_dir: Path
    info: dict[str, Any]
    chash: str
    plan: list[Stage]
    only: Iterable[str] | None
    progress: Progress
    scheduler: Scheduler
    t0: float

    @staticmethod
    def check(cfg: dict[str, Any], data_root, only, notebooks_dir) -> tuple[Path, list[Stage]]:
        """(notebooks folder, stages to run) once everything a run needs before its folder exists
        holds: ``--data`` for real data, a plan, its notebooks, the kernel. Nothing is written."""
        nb_dir = Path(notebooks_dir) if notebooks_dir else NOTEBOOKS_DIR
        if cfg["data"]["kind"] == "real":
            if not data_root:
                raise ValueError(f"{cfg['name']}: data.kind is 'real': give the datasets' root with --data ROOT")
            if not Path(data_root).is_dir():
                raise ValueError(f"--data {data_root}: folder not found")
        plan = select_stages(build_plan(cfg), only)
        missing_nb = sorted({s.notebook for s in plan if not (nb_dir / s.notebook).is_file()})
        if missing_nb:
            raise FileNotFoundError(f"notebook(s) not found in {nb_dir}: {', '.join(missing_nb)}")
        check_kernel()
        return nb_dir, plan

    @classmethod
    def open(cls, cfg: dict[str, Any], out, data_root, force, run_id, only, notebooks_dir, stream,
             name_lines: bool = False, checked: tuple[Path, list[Stage]] | None = None) -> "_Run":
        """Make (or resume) the run folder and its scheduler; ``checked``: :meth:`check`'s result."""
        nb_dir, plan = checked if checked is not None else cls.check(cfg, data_root, only, notebooks_dir)
        chash = config_hash(cfg)
        run_dir, resumed, info = prepare_run(cfg, out, run_id=run_id, force=force, data_root=data_root)
        config_path = run_dir / "config.yaml"
        progress = Progress({s.id: s.weight for s in plan}, stream=stream, name=cfg["name"] if name_lines else "",
                            title=f"cxr run {cfg['name']}: {'resuming' if resumed else 'new'} run "
                                  f"{run_dir} (config {chash}{', smoke' if cfg.get('smoke') else ''})")
        hashes: dict[str, str] = {}
        for stage in plan:  # a stage's hash needs only its upstream hashes: all known up front
            hashes[stage.id] = layout.stage_hash(stage, chash, nb_dir / stage.notebook, hashes)
        root = str(Path(data_root).resolve()) if data_root else ""

        def params(stage: Stage) -> dict[str, Any]:
            return {"config_path": str(config_path), "run_dir": str(run_dir),
                    "stage_dir": str(layout.stage_dir(run_dir, stage.id)), "data_root": root, **stage.params}

        scheduler = Scheduler(plan, run_dir, info, hashes, params, nb_dir, progress, force=force)
        return cls(cfg, run_dir, info, chash, plan, only, progress, scheduler, time.monotonic())

    def close(self) -> RunResult:
        """Record the outcome in ``run.json``, write the index page; raise :class:`RunFailed` on a failure."""
        from cxrlib.report.index import write_index

        info, run_dir, scheduler = self.info, self.run_dir, self.scheduler
        result = RunResult(run_dir=run_dir, run_id=run_dir.name, config_hash=self.chash,
                           executed=scheduler.executed, skipped=scheduler.skipped)
        if scheduler.failures:
            stage, message = scheduler.failures[0]
            info.update(status="failed", updated=layout.now_iso(), failed_stage=stage.id)
            layout.write_run(run_dir, info)
            try:
                write_index(run_dir)
            except Exception:  # the index must not hide the notebook's error
                traceback.print_exc()
            raise RunFailed(f"stage {stage.id} failed: {message}", stage.id,
                            layout.notebook_path(run_dir, stage.id), run_dir)

        result.seconds = time.monotonic() - self.t0
        complete = self.only is None or set(s.id for s in self.plan) == set(info["plan"])
        info.update(status="complete" if complete else "partial", updated=layout.now_iso(),
                    seconds_last_invocation=round(result.seconds, 1))
        info.pop("failed_stage", None)
        layout.write_run(run_dir, info)
        write_index(run_dir)
        self.progress.message(f"report: {run_dir / 'index.html'}  ({len(result.executed)} executed, "
                              f"{len(result.skipped)} skipped, {self.progress.elapsed():.0f} s)")
        return result

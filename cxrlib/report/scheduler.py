"""Run a plan's stages in dependency order, up to ``jobs`` at a time: the :class:`Scheduler`.

The scheduler owns the three sets of a run -- pending, running, done -- and the run's
``run.json`` record of each stage. It skips a stage that is already done (the report stage's
resume rule, :func:`cxrlib.report.layout.stage_is_done`), starts ready stages, records each
outcome, and after a failure starts nothing new (running stages finish). On Ctrl-C it stops
the running notebooks (:func:`cxrlib.report.execute.stop_processes`) and marks them
interrupted; finished stages stay done, so the rerun skips them.

:func:`run_many` runs several runs' schedulers in one loop sharing ``jobs`` slots (``cxr demo``
runs both papers side by side, so no core idles while one paper waits on its longest chain).
When a slot frees, the ready stage with the longest chain of work still behind it
(:func:`chain_weights`, the stage's weight plus its heaviest chain of dependants) starts first,
whichever run it belongs to: the classic critical-path rule of list scheduling.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from cxrlib.report import layout
from cxrlib.report.execute import StageError, execute_stage, stop_processes
from cxrlib.report.plan import Stage
from cxrlib.report.progress import Progress


def chain_weights(plan: Sequence[Stage]) -> dict[str, float]:
    """Stage id -> its weight plus the heaviest chain of stages that depend on it (its priority)."""
    dependants: dict[str, list[str]] = {s.id: [] for s in plan}
    for s in plan:
        for d in s.depends:
            dependants.setdefault(d, []).append(s.id)
    weight = {s.id: float(s.weight) for s in plan}
    out: dict[str, float] = {}
    for s in reversed(list(plan)):  # plan order is a dependency order: dependants come later
        out[s.id] = weight[s.id] + max((out[c] for c in dependants[s.id] if c in out), default=0.0)
    return out


def select_stages(plan: Sequence[Stage], only: Iterable[str] | None) -> list[Stage]:
    """Stages whose id starts with one of ``only``, plus everything they depend on."""
    if not only:
        return list(plan)
    prefixes = tuple(only)
    by_id = {s.id: s for s in plan}
    wanted: set[str] = set()
    stack = [s.id for s in plan if s.id.startswith(prefixes)]
    if not stack:
        raise ValueError(f"no stage matches {list(prefixes)}; stages: {', '.join(by_id)}")
    while stack:
        sid = stack.pop()
        if sid not in wanted:
            wanted.add(sid)
            stack.extend(by_id[sid].depends)
    return [s for s in plan if s.id in wanted]


class Scheduler:
    """Executes the stages of one run folder.

    Args:
        plan: the stages to run (dependency order).
        run_dir: the run folder.
        info: the run's ``run.json`` record (updated in place and written after every change).
        hashes: stage id -> stage hash.
        params: stage -> its papermill parameters.
        notebooks_dir: where the source notebooks are.
        progress: progress printer.
        jobs: notebooks executed at the same time.
        force: execute stages even when done.
        execute: the function executing one stage (tests inject stand-ins).

    Attributes:
        pending, running, done: the stages not started, executing, finished (done or skipped).
        executed, skipped: stage ids, in the order they finished.
        failures: (stage, message) of failed stages.
    """

    def __init__(self, plan: Sequence[Stage], run_dir: Path, info: dict[str, Any], hashes: Mapping[str, str],
                 params: Callable[[Stage], dict[str, Any]], notebooks_dir: Path, progress: Progress,
                 jobs: int = 1, force: bool = False, execute: Callable[..., Path] = execute_stage):
        self.run_dir, self.info, self.hashes = run_dir, info, hashes
        self.params, self.notebooks_dir, self.progress = params, notebooks_dir, progress
        self.jobs, self.force, self.execute = max(1, int(jobs)), force, execute
        self.pending: list[Stage] = list(plan)
        self.running: dict[Future, tuple[Stage, float]] = {}
        self.done: set[str] = set()
        self.executed: list[str] = []
        self.skipped: list[str] = []
        self.failures: list[tuple[Stage, str]] = []
        self.processes: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ records
    def record(self, stage: Stage) -> dict[str, Any]:
        rec = self.info["stages"].setdefault(stage.id, {})
        rec.update(notebook=stage.notebook, label=stage.label, params=stage.params,
                   depends=list(stage.depends))
        return rec

    def save(self) -> None:
        layout.write_run(self.run_dir, self.info)

    # ------------------------------------------------------------------ steps
    def _ready(self, stage: Stage) -> bool:
        return all(d in self.done for d in stage.depends)

    def is_done(self, stage: Stage) -> bool:
        """The report stage's resume rule (never under ``force``)."""
        return not self.force and layout.stage_is_done(layout.stage_dir(self.run_dir, stage.id),
                                                       self.hashes[stage.id],
                                                       layout.notebook_path(self.run_dir, stage.id))

    def ready(self) -> list[Stage]:
        """Pending stages whose dependencies are done (none after a failure)."""
        return [] if self.failures else [s for s in self.pending if self._ready(s)]

    def start(self, stage: Stage, pool: ThreadPoolExecutor) -> None:
        """Skip ``stage`` if it is done, else start its notebook in ``pool``."""
        self.pending.remove(stage)
        sdir = layout.stage_dir(self.run_dir, stage.id)
        out_nb = layout.notebook_path(self.run_dir, stage.id)
        rec = self.record(stage)
        if self.is_done(stage):
            rec["skipped_at"] = layout.now_iso()
            self.skipped.append(stage.id)
            self.done.add(stage.id)
            self.progress.stage_finished(stage.id, stage.label, 0.0, status="skipped")
            return
        attempt = layout.keep_aside(sdir, out_nb, self.run_dir)
        sdir.mkdir(parents=True)
        layout.restore_finished_folds(attempt, sdir)  # an interrupted strategy resumes at its next fold
        out_nb.parent.mkdir(parents=True, exist_ok=True)
        rec.update(status="running", started=layout.now_iso(), hash=self.hashes[stage.id])
        rec.pop("error", None)
        self.save()
        self.progress.stage_started(stage.id, stage.label)
        fut = pool.submit(self.execute, stage, self.run_dir, self.params(stage), self.notebooks_dir,
                          processes=self.processes)
        self.running[fut] = (stage, time.monotonic())

    def finish(self, fut: Future) -> None:
        """Record the outcome of a stage whose future completed."""
        stage, t0 = self.running.pop(fut)
        seconds = round(time.monotonic() - t0, 1)
        sdir = layout.stage_dir(self.run_dir, stage.id)
        rec = self.record(stage)
        exc = fut.exception()
        if exc is not None:
            message = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
            self.progress.stage_finished(stage.id, stage.label, seconds, status="FAILED")
            rec.update(status="failed", seconds=seconds, error=message, finished=layout.now_iso())
            layout.write_stage(sdir, {"hash": self.hashes[stage.id], "status": "failed", "error": message})
            self.failures.append((stage, message))
        else:
            layout.write_stage(sdir, {
                "hash": self.hashes[stage.id], "status": "done", "stage": stage.id, "seconds": seconds,
                "outputs": layout.list_outputs(sdir), "finished": layout.now_iso()})
            rec.update(status="done", seconds=seconds, finished=layout.now_iso())
            self.executed.append(stage.id)
            self.done.add(stage.id)
            self.progress.stage_finished(stage.id, stage.label, seconds)
        self.save()

    def interrupt(self) -> list[str]:
        """Stop running notebooks; record them (and the run) as interrupted. Returns their ids."""
        stopped = [(stage, t0) for stage, t0 in self.running.values()]
        stop_processes(list(self.processes.values()))
        for stage, t0 in stopped:
            self.progress.stage_finished(stage.id, stage.label, time.monotonic() - t0, status="interrupted")
            rec = self.record(stage)
            rec.update(status="interrupted", finished=layout.now_iso())
            layout.write_stage(layout.stage_dir(self.run_dir, stage.id),
                               {"hash": self.hashes[stage.id], "status": "interrupted"})
        self.info.update(status="interrupted", updated=layout.now_iso())
        self.save()
        return [s.id for s, _ in stopped]

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Execute until every stage is done or a stage failed (then running stages finish).

        Raises:
            KeyboardInterrupt: after :meth:`interrupt` recorded the stopped stages.
        """
        run_many([self], self.jobs)


def launch(pool: ThreadPoolExecutor, schedulers: Sequence[Scheduler], free: Callable[[], int]) -> None:
    """Start ready stages of ``schedulers`` while ``free()`` slots remain, longest chain first.

    A ready stage that is already done is skipped without taking a slot, which may make others
    ready; hence the loop until nothing changes.
    """
    priority = {id(s): chain_weights(s.pending) for s in schedulers}
    while True:
        ready = [(priority[id(sch)].get(st.id, 0.0), -i, sch, st)
                 for i, sch in enumerate(schedulers) for st in sch.ready()]
        if not ready:
            return
        _, _, sch, stage = max(ready, key=lambda r: (r[0], r[1]))
        if free() <= 0 and not sch.is_done(stage):
            return
        sch.start(stage, pool)


def run_many(schedulers: Sequence[Scheduler], jobs: int) -> None:
    """Run several schedulers (several run folders) in one loop, ``jobs`` notebooks at a time in all.

    A failure in one run stops new starts in that run only. On Ctrl-C every run's running
    notebooks are stopped and recorded as interrupted.

    Raises:
        KeyboardInterrupt: after each scheduler's :meth:`Scheduler.interrupt`.
    """
    jobs = max(1, int(jobs))
    owner: dict[Future, Scheduler] = {}

    def free() -> int:
        return jobs - sum(len(s.running) for s in schedulers)

    def start_more(pool: ThreadPoolExecutor) -> None:
        launch(pool, schedulers, free)
        for sch in schedulers:
            for fut in sch.running:
                owner[fut] = sch

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            start_more(pool)
            while owner:
                finished, _ = wait(list(owner), return_when=FIRST_COMPLETED)
                for fut in finished:
                    owner.pop(fut).finish(fut)
                start_more(pool)  # after a failure nothing new starts in that run
        except KeyboardInterrupt:
            for sch in schedulers:
                sch.interrupt()
            raise

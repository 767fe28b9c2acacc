"""Run a plan's stages in dependency order, up to ``jobs`` at a time: the :class:`Scheduler`.

The scheduler owns the three sets of a run -- pending, running, done -- and the run's
``run.json`` record of each stage. It skips a stage that is already done (the report stage's
resume rule, :func:`cxrlib.report.layout.stage_is_done`), starts ready stages, records each
outcome, and after a failure starts nothing new (running stages finish). On Ctrl-C it stops
the running notebooks (:func:`cxrlib.report.execute.stop_processes`) and marks them
interrupted; finished stages stay done, so the rerun skips them.
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

    def launch_ready(self, pool: ThreadPoolExecutor) -> None:
        """Skip finished stages and start ready ones, up to ``jobs`` at a time, in plan order."""
        progressed = True
        while progressed and not self.failures:
            progressed = False
            for stage in list(self.pending):
                if len(self.running) >= self.jobs or not self._ready(stage):
                    continue
                self.pending.remove(stage)
                progressed = True
                self._start(stage, pool)

    def _start(self, stage: Stage, pool: ThreadPoolExecutor) -> None:
        sdir = layout.stage_dir(self.run_dir, stage.id)
        out_nb = layout.notebook_path(self.run_dir, stage.id)
        rec = self.record(stage)
        if not self.force and layout.stage_is_done(sdir, self.hashes[stage.id], out_nb):
            rec["skipped_at"] = layout.now_iso()
            self.skipped.append(stage.id)
            self.done.add(stage.id)
            self.progress.stage_finished(stage.id, stage.label, 0.0, status="skipped")
            return
        layout.keep_aside(sdir, out_nb, self.run_dir)
        sdir.mkdir(parents=True)
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
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            try:
                self.launch_ready(pool)
                while self.running:
                    finished, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
                    for fut in finished:
                        self.finish(fut)
                    self.launch_ready(pool)  # after a failure nothing new starts
            except KeyboardInterrupt:
                self.interrupt()
                raise

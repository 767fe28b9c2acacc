"""Run an experiment: execute its notebooks with papermill, render them with nbconvert.

Layout of one run (``reports/<experiment>/<run_id>/``)::

    run.json                 run id, config hash, status, one record per stage
    config.yaml              the resolved config the notebooks read
    notebooks/<stage>.ipynb  executed notebook (kept, partially executed, when it fails)
    notebooks/<stage>.html   the same rendered by nbconvert
    stages/<stage>/          everything the stage wrote (models, CSV, JSON, figures)
    stages/<stage>/stage.json  the stage's hash, status and the list of its outputs
    stages/06_summary/*.csv  tidy result tables (metrics, summary, paper_comparison)
    index.html               the report: links, summary tables, key figures, papers vs run

Runs never overwrite each other: a new run id is made unless a run of the *same config
hash* exists, in which case that run is resumed -- a stage whose ``stage.json`` has the same
stage hash (config, notebook file, upstream stages) and whose outputs all exist is skipped.
``force=True`` starts a new run and executes everything.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cxrlib.report.config import (
    canonical_json, config_hash, file_hash, load_experiment, save_config,
)
from cxrlib.report.locate import notebooks_dir, packaged_experiments_dir
from cxrlib.report.plan import Stage, build_plan
from cxrlib.report.progress import Progress

NOTEBOOKS_DIR = notebooks_dir()  # packaged notebooks (cxrlib/notebooks), see cxrlib.report.locate
EXPERIMENTS_DIR = packaged_experiments_dir()
KERNEL_NAME = "python3"


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


# --------------------------------------------------------------------------- json helpers
def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a crash leaves the previous file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def now_iso() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- run folders
def new_run_id(base: Path, smoke: bool = False) -> str:
    """A fresh run id ``YYYYmmdd-HHMMSS[-smoke]`` that does not exist under ``base``."""
    stem = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-smoke" if smoke else "")
    run_id, n = stem, 2
    while (base / run_id).exists():
        run_id, n = f"{stem}-{n}", n + 1
    return run_id


def find_resumable(base: Path, chash: str) -> Path | None:
    """The most recent run under ``base`` made from the config with hash ``chash``."""
    if not base.is_dir():
        return None
    runs = []
    for d in base.iterdir():
        info = read_json(d / "run.json") if d.is_dir() and not d.is_symlink() else None
        if info and info.get("config_hash") == chash:
            runs.append((info.get("created", ""), d))
    return max(runs)[1] if runs else None


def choose_run_dir(out: Path, cfg: Mapping[str, Any], run_id: str | None = None,
                   force: bool = False) -> tuple[Path, bool]:
    """Pick the run folder: resume the same-config run, or make a new one.

    Args:
        out: reports root (``reports``); runs go to ``out/<experiment>/<run_id>``.
        cfg: resolved config.
        run_id: explicit run id. Resumed if it exists with the same config hash; an existing
            run of another config is refused (runs are never overwritten).
        force: always start a new run (all stages executed).

    Returns:
        (run folder, True if an existing run is resumed).
    """
    base = out / str(cfg["name"])
    chash = config_hash(cfg)
    if run_id:
        run_dir = base / run_id
        info = read_json(run_dir / "run.json")
        if run_dir.exists() and (info is None or info.get("config_hash") != chash):
            raise ValueError(
                f"run {run_dir} exists and was made from another config "
                f"(hash {info.get('config_hash') if info else 'unknown'}, now {chash}); "
                "runs are never overwritten: choose another --run-id or omit it")
        if run_dir.exists() and force:
            raise ValueError(f"--force starts a new run; {run_dir} exists: omit --run-id")
        return run_dir, run_dir.exists()
    if not force:
        found = find_resumable(base, chash)
        if found is not None:
            return found, True
    return base / new_run_id(base, bool(cfg.get("smoke"))), False


def update_latest_link(run_dir: Path) -> None:
    """Point ``reports/<experiment>/latest`` at this run (relative symlink; best effort)."""
    link = run_dir.parent / "latest"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(run_dir.name, target_is_directory=True)
    except OSError:
        pass


# --------------------------------------------------------------------------- hashing
def stage_hash(stage: Stage, chash: str, notebook: Path, upstream: Mapping[str, str]) -> str:
    """Hash of what a stage's outputs depend on: config, its parameters, notebook, upstream."""
    body = {
        "config": chash,
        "stage": stage.id,
        "params": stage.params,
        "notebook": file_hash(notebook),
        "upstream": {d: upstream.get(d, "") for d in stage.depends},
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:12]


def list_outputs(stage_dir: Path) -> list[str]:
    """Files a stage wrote (relative to its folder), without ``stage.json``."""
    if not stage_dir.is_dir():
        return []
    return sorted(str(p.relative_to(stage_dir)) for p in stage_dir.rglob("*")
                  if p.is_file() and p.name != "stage.json" and not p.name.endswith(".tmp"))


def stage_is_done(stage_dir: Path, shash: str, notebook_out: Path) -> bool:
    """True when the stage finished with hash ``shash`` and all its outputs still exist."""
    info = read_json(stage_dir / "stage.json")
    if not info or info.get("status") != "done" or info.get("hash") != shash:
        return False
    if not notebook_out.is_file():
        return False
    return all((stage_dir / rel).is_file() for rel in info.get("outputs", []))


# --------------------------------------------------------------------------- notebooks
def check_kernel(kernel_name: str = KERNEL_NAME) -> str:
    """Check that ``kernel_name`` resolves to a kernel running this Python (the venv's).

    jupyter_client replaces a kernelspec's ``python`` argv[0] with ``sys.executable``, so the
    ``python3`` kernelspec installed by ipykernel into the venv runs the venv's interpreter
    even when the venv is not activated.

    Returns:
        The interpreter the kernel will run.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel as exc:
        raise RuntimeError(
            f"Jupyter kernel {kernel_name!r} not found. Install it into this environment with "
            f"`{sys.executable} -m ipykernel install --sys-prefix`") from exc
    exe = spec.argv[0]
    if exe in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return sys.executable
    return exe


def render_html(notebook: Path, html: Path) -> Path:
    """Render an executed notebook to a standalone HTML file (images embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter()
    exporter.exclude_input_prompt = False
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook.stem}})
    tmp = html.with_name(html.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, html)
    return html


class StageError(RuntimeError):
    """A stage's notebook failed; the message locates the failing cell and shows its error."""


def _clean(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def notebook_error(notebook: Path) -> dict[str, Any] | None:
    """The first error output of an executed notebook: cell number, ename, evalue, traceback."""
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except (OSError, ValueError):
        return None
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                return {"cell": i + 1, "exec_count": cell.get("execution_count"), "ename": out.get("ename", ""),
                        "evalue": out.get("evalue", ""), "traceback": [_clean(t) for t in out.get("traceback", [])]}
    return None


def describe_failure(notebook: Path, log: Path | None = None) -> str:
    """Readable message for a failed notebook: the failing cell, its error, the traceback's ends.

    Args:
        notebook: the (partially) executed notebook.
        log: papermill's log of the execution, shown when the notebook holds no error
            (e.g. the kernel died).
    """
    err = notebook_error(notebook)
    if err is None:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log and log.is_file() else ""
        return f"{notebook.name}: execution failed without a cell error (kernel died?)\n{tail}\n(log: {log})"
    lines = [ln for ln in "\n".join(err["traceback"]).splitlines() if ln.strip() and not set(ln.strip()) <= {"-"}]
    # where in the notebook's cell it failed ("Cell In[n], line m" and the source line marked
    # ---->) and the innermost frames with the error itself (last lines)
    cell = max((i for i, ln in enumerate(lines) if ln.startswith("Cell In[")), default=None)
    head = []
    if cell is not None:
        head = lines[cell:cell + 1] + [ln for ln in lines[cell + 1:cell + 6] if ln.lstrip().startswith("---->")]
    tail = "\n".join(head + ["    ..."] + lines[-8:])
    return (f"cell {err['cell']} of {notebook.name} raised {err['ename']}: {err['evalue']}\n"
            f"{tail}\n(partially executed notebook kept: {notebook})")


def execute_stage(stage: Stage, run_dir: Path, params: Mapping[str, Any],
                  notebooks_dir: Path = NOTEBOOKS_DIR, kernel_name: str = KERNEL_NAME) -> Path:
    """Execute one stage's notebook with papermill (in its own process) and render it to HTML.

    papermill runs as ``python -m papermill`` so stages can run side by side and the kernel's
    own log lines (TensorFlow start-up messages) go to ``notebooks/<stage>.log``, not the
    terminal. The executed notebook is saved after every cell, so a failure keeps the
    partially executed notebook (and its HTML).

    Args:
        stage: the stage.
        run_dir: run folder.
        params: papermill parameters (the common ones plus the stage's own).
        notebooks_dir: where the source notebooks are.
        kernel_name: Jupyter kernel to run.

    Returns:
        The executed notebook path.

    Raises:
        StageError: a cell failed or the kernel died; the message shows where and why.
    """
    import subprocess

    import yaml

    source = notebooks_dir / stage.notebook
    out_nb = run_dir / "notebooks" / f"{stage.id}.ipynb"
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    param_file = out_nb.with_suffix(".params.yaml")
    param_file.write_text(yaml.safe_dump(dict(params)), encoding="utf-8")
    log = out_nb.with_suffix(".log")
    cmd = [sys.executable, "-m", "papermill", str(source), str(out_nb), "-f", str(param_file),
           "-k", kernel_name, "--cwd", str(notebooks_dir), "--no-progress-bar",
           "--request-save-on-cell-execute"]
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_kernel_env())
    if out_nb.is_file():
        render_html(out_nb, out_nb.with_suffix(".html"))
    if proc.returncode != 0:
        raise StageError(describe_failure(out_nb, log))
    return out_nb


def _kernel_env() -> dict[str, str]:
    """Environment of a stage process: this venv first on PATH, TF's C++ start-up logs quiet.

    TensorFlow's C++ log lines (CUDA plugin registration "errors" on a CPU machine) would
    otherwise land in the notebooks' first cell output; Python exceptions are unaffected.
    ``CXR_KERNEL_TF_LOG_LEVEL`` sets another level (0 = all C++ logs).
    """
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("CXR_KERNEL_TF_LOG_LEVEL", "3")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def keep_aside(stage_dir: Path, out_nb: Path, run_dir: Path) -> Path | None:
    """Move an earlier, unfinished attempt of a stage to ``stages/.attempts/`` (never delete).

    Returns:
        The attempt folder, or None when there was nothing to move.
    """
    leftovers = [p for p in (stage_dir, out_nb, out_nb.with_suffix(".html"), out_nb.with_suffix(".log"))
                 if p.exists()]
    if not leftovers:
        return None
    attempt = run_dir / "stages" / ".attempts" / f"{stage_dir.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    attempt.mkdir(parents=True, exist_ok=True)
    for p in leftovers:
        os.replace(p, attempt / ("outputs" if p == stage_dir else p.name))
    return attempt


# --------------------------------------------------------------------------- the run
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


def prepare_run(cfg: Mapping[str, Any], out: str | os.PathLike, run_id: str | None = None,
                force: bool = False, data_root: str | os.PathLike | None = None
                ) -> tuple[Path, bool, dict[str, Any]]:
    """Create (or reopen) the run folder with its ``config.yaml`` and ``run.json``.

    Returns:
        (run folder, True if resumed, the run.json record marked running).
    """
    run_dir, resumed = choose_run_dir(Path(out).resolve(), cfg, run_id=run_id, force=force)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    info = read_json(run_dir / "run.json") or {
        "experiment": cfg["name"], "run_id": run_dir.name, "config_hash": config_hash(cfg),
        "created": now_iso(), "smoke": bool(cfg.get("smoke")), "stages": {},
    }
    info.update(status="running", updated=now_iso(), python=sys.executable,
                data_root=str(Path(data_root).resolve()) if data_root else "",
                plan=[s.id for s in build_plan(cfg)],
                labels={s.id: s.label for s in build_plan(cfg)})
    write_json(run_dir / "run.json", info)
    update_latest_link(run_dir)
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
            strategy x fold fan-out). On 2 cores, 2 helps small stages, whose time is mostly
            single-threaded start-up and graph building.

    Raises:
        RunFailed: a notebook failed; no new stage starts, stages already running finish,
            the failed notebook (partially executed) and its HTML are kept.
    """
    from cxrlib.report.index import write_index

    cfg = (dict(config) if isinstance(config, Mapping)
           else load_experiment(config, smoke=smoke, overrides=overrides))
    nb_dir = Path(notebooks_dir) if notebooks_dir else NOTEBOOKS_DIR
    if cfg["data"]["kind"] == "real":
        if not data_root:
            raise ValueError(f"{cfg['name']}: data.kind is 'real': give the datasets' root with --data ROOT")
        if not Path(data_root).is_dir():
            raise ValueError(f"--data {data_root}: folder not found")
    chash = config_hash(cfg)
    plan = select_stages(build_plan(cfg), only)
    missing_nb = sorted({s.notebook for s in plan if not (nb_dir / s.notebook).is_file()})
    if missing_nb:
        raise FileNotFoundError(f"notebook(s) not found in {nb_dir}: {', '.join(missing_nb)}")
    check_kernel()

    run_dir, resumed, info = prepare_run(cfg, out, run_id=run_id, force=force, data_root=data_root)
    config_path = run_dir / "config.yaml"

    progress = Progress({s.id: s.weight for s in plan}, stream=stream,
                        title=f"cxr run {cfg['name']}: {'resuming' if resumed else 'new'} run "
                              f"{run_dir} (config {chash}{', smoke' if cfg.get('smoke') else ''})")
    result = RunResult(run_dir=run_dir, run_id=run_dir.name, config_hash=chash)
    hashes: dict[str, str] = {}
    for stage in plan:  # a stage's hash needs only its upstream hashes: all known up front
        hashes[stage.id] = stage_hash(stage, chash, nb_dir / stage.notebook, hashes)
    t_run = time.monotonic()
    done: set[str] = set()
    failures: list[tuple[Stage, str]] = []
    pending = list(plan)
    running: dict[Future, tuple[Stage, float]] = {}

    def record_of(stage: Stage) -> dict[str, Any]:
        rec = info["stages"].setdefault(stage.id, {})
        rec.update(notebook=stage.notebook, label=stage.label, params=stage.params,
                   depends=list(stage.depends))
        return rec

    def launch_ready(pool: ThreadPoolExecutor) -> None:
        """Skip finished stages and start ready ones, up to ``jobs`` at a time, in plan order."""
        progressed = True
        while progressed and not failures:
            progressed = False
            for stage in list(pending):
                if len(running) >= jobs or any(d not in done for d in stage.depends):
                    continue
                pending.remove(stage)
                progressed = True
                stage_dir = run_dir / "stages" / stage.id
                out_nb = run_dir / "notebooks" / f"{stage.id}.ipynb"
                rec = record_of(stage)
                if not force and stage_is_done(stage_dir, hashes[stage.id], out_nb):
                    rec["skipped_at"] = now_iso()
                    result.skipped.append(stage.id)
                    done.add(stage.id)
                    progress.stage_finished(stage.id, stage.label, 0.0, status="skipped")
                    continue
                keep_aside(stage_dir, out_nb, run_dir)
                stage_dir.mkdir(parents=True)
                params = {
                    "config_path": str(config_path), "run_dir": str(run_dir), "stage_dir": str(stage_dir),
                    "data_root": str(Path(data_root).resolve()) if data_root else "", **stage.params,
                }
                rec.update(status="running", started=now_iso(), hash=hashes[stage.id])
                rec.pop("error", None)
                write_json(run_dir / "run.json", info)
                progress.stage_started(stage.id, stage.label)
                fut = pool.submit(execute_stage, stage, run_dir, params, nb_dir)
                running[fut] = (stage, time.monotonic())

    def finish(fut: Future) -> None:
        stage, t0 = running.pop(fut)
        seconds = time.monotonic() - t0
        stage_dir = run_dir / "stages" / stage.id
        rec = record_of(stage)
        exc = fut.exception()
        if exc is not None:
            message = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
            progress.stage_finished(stage.id, stage.label, seconds, status="FAILED")
            rec.update(status="failed", seconds=round(seconds, 1), error=message, finished=now_iso())
            write_json(stage_dir / "stage.json", {"hash": hashes[stage.id], "status": "failed", "error": message})
            failures.append((stage, message))
        else:
            write_json(stage_dir / "stage.json", {
                "hash": hashes[stage.id], "status": "done", "stage": stage.id, "seconds": round(seconds, 1),
                "outputs": list_outputs(stage_dir), "finished": now_iso()})
            rec.update(status="done", seconds=round(seconds, 1), finished=now_iso())
            result.executed.append(stage.id)
            done.add(stage.id)
            progress.stage_finished(stage.id, stage.label, seconds)
        write_json(run_dir / "run.json", info)

    try:
        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            launch_ready(pool)
            while running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    finish(fut)
                launch_ready(pool)  # after a failure nothing new starts; running stages finish
    except KeyboardInterrupt:
        info.update(status="interrupted", updated=now_iso())
        write_json(run_dir / "run.json", info)
        raise
    if failures:
        stage, message = failures[0]
        info.update(status="failed", updated=now_iso(), failed_stage=stage.id)
        write_json(run_dir / "run.json", info)
        try:
            write_index(run_dir)
        except Exception:  # the index must not hide the notebook's error
            traceback.print_exc()
        raise RunFailed(f"stage {stage.id} failed: {message}", stage.id,
                        run_dir / "notebooks" / f"{stage.id}.ipynb", run_dir)

    result.seconds = time.monotonic() - t_run
    complete = only is None or set(s.id for s in plan) == set(info["plan"])
    info.update(status="complete" if complete else "partial", updated=now_iso(),
                seconds_last_invocation=round(result.seconds, 1))
    info.pop("failed_stage", None)
    write_json(run_dir / "run.json", info)
    write_index(run_dir)
    progress.message(f"report: {run_dir / 'index.html'}  ({len(result.executed)} executed, "
                     f"{len(result.skipped)} skipped, {progress.elapsed():.0f} s)")
    return result

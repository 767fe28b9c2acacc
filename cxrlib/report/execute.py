"""Execute one stage's notebook with papermill (its own process) and render it with nbconvert.

papermill runs as ``python -m cxrlib.report.papermill_main`` (papermill's command line,
started lighter) so stages can run side by side and can be stopped
(Ctrl-C: :func:`stop_processes`); the kernel's own log lines (TensorFlow start-up messages)
go to ``notebooks/<stage>.log``, not the terminal; the kernel's warnings, logging and stderr go
to ``notebooks/<stage>.stderr.log``, not into the rendered notebook
(:mod:`cxrlib.report.kernel_setup`). The executed notebook is saved after every
cell, so a failure keeps the partially executed notebook (and its HTML).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, MutableMapping

from cxrlib.io import write_text
from cxrlib.report.layout import notebook_path
from cxrlib.report.plan import Stage

KERNEL_NAME = "python3"
# papermill's command line without its slowest optional import (see that module)
PAPERMILL_MAIN = "cxrlib.report.papermill_main"


class StageError(RuntimeError):
    """A stage's notebook failed; the message locates the failing cell and shows its error."""


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
    return write_text(html, body)


def _clean(text: str) -> str:
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


def kernel_env() -> dict[str, str]:
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


STARTUP = "from cxrlib.report.kernel_setup import route_noise\nroute_noise()\n"


def ipython_dir(run_dir: Path) -> Path:
    """The IPython folder of a run's kernels: its startup file routes library noise to the
    stage log (:mod:`cxrlib.report.kernel_setup`) instead of the rendered notebook."""
    folder = Path(run_dir) / "notebooks" / ".ipython"
    startup = folder / "profile_default" / "startup" / "00-cxrlib.py"
    if not startup.is_file() or startup.read_text() != STARTUP:
        write_text(startup, STARTUP)
    return folder


def execute_stage(stage: Stage, run_dir: Path, params: Mapping[str, Any], notebooks_dir: Path,
                  kernel_name: str = KERNEL_NAME,
                  processes: MutableMapping[str, subprocess.Popen] | None = None) -> Path:
    """Execute one stage's notebook with papermill and render it to HTML.

    Args:
        stage: the stage.
        run_dir: run folder.
        params: papermill parameters (the common ones plus the stage's own).
        notebooks_dir: where the source notebooks are.
        kernel_name: Jupyter kernel to run.
        processes: where the papermill process is registered under the stage id while it
            runs, so that :func:`stop_processes` can stop it.

    Returns:
        The executed notebook path.

    Raises:
        StageError: a cell failed or the kernel died; the message shows where and why.
    """
    import yaml

    source = notebooks_dir / stage.notebook
    out_nb = notebook_path(run_dir, stage.id)
    param_file = write_text(notebook_path(run_dir, stage.id, ".params.yaml"), yaml.safe_dump(dict(params)))
    log = out_nb.with_suffix(".log")
    cmd = [sys.executable, "-m", PAPERMILL_MAIN, str(source), str(out_nb), "-f", str(param_file),
           "-k", kernel_name, "--cwd", str(notebooks_dir), "--no-progress-bar",
           "--request-save-on-cell-execute"]
    env = kernel_env()
    env.update(IPYTHONDIR=str(ipython_dir(run_dir)), CXR_STAGE_LOG=str(out_nb.with_suffix(".stderr.log")))
    with open(log, "w", encoding="utf-8") as f:
        # own session: a terminal's Ctrl-C reaches only cxr, which then stops the stages in order
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if processes is not None:
            processes[stage.id] = proc
        try:
            returncode = proc.wait()
        finally:
            if processes is not None:
                processes.pop(stage.id, None)
    if out_nb.is_file():
        render_html(out_nb, out_nb.with_suffix(".html"))
    if returncode != 0:
        raise StageError(describe_failure(out_nb, log))
    return out_nb


def stop_processes(processes: Iterable[subprocess.Popen], grace: float = 15.0) -> None:
    """Stop running papermill processes and their kernels.

    SIGINT first: papermill then shuts its kernel down and saves the partial notebook. What is
    still alive after ``grace`` seconds is killed with its process tree (psutil when present).
    """
    procs = [p for p in processes if p.poll() is None]
    for p in procs:
        try:
            p.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_tree(p)


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # psutil missing or the process is gone
        children = []
    for c in children:
        try:
            c.kill()
        except Exception:
            pass
    proc.kill()
    proc.wait()

"""The built wheel, installed non-editable into a fresh venv, runs ``cxr run paper_b --smoke``
from a folder that is not the checkout (notebooks and configs are package data)."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_runs_paper_b_smoke_from_anywhere(tmp_path: Path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, REPO],
         cwd=tmp_path)
    wheel = next(wheels.glob("cxrlib-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    # the project's dependencies: this environment's site-packages as a plain path entry (its
    # own .pth files, among them the editable install of cxrlib, are not processed)
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "zz_cxrlib_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel])

    where = Path(_run([py, "-c", "import cxrlib; print(cxrlib.__file__)"], cwd=tmp_path).stdout.strip())
    assert where.is_relative_to(venv), f"cxrlib imported from {where}, not from the installed wheel"

    work = tmp_path / "elsewhere"
    work.mkdir()
    out = tmp_path / "reports"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # nbconvert's HTML templates are data files of the dependency environment (share/jupyter),
    # which a .pth cannot reach: expose only them (not its kernelspecs) through JUPYTER_PATH
    jupyter = tmp_path / "jupyter"
    jupyter.mkdir()
    (jupyter / "nbconvert").symlink_to(Path(sys.prefix) / "share" / "jupyter" / "nbconvert")
    env["JUPYTER_PATH"] = str(jupyter)
    _run([venv / "bin" / "cxr", "run", "paper_b", "--smoke", "--out", out], cwd=work, env=env, timeout=1500)
    run = next(d for d in (out / "paper_b").iterdir() if d.is_dir() and not d.is_symlink())
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and (run / "index.html").is_file()
    assert Path(info["python"]).parent == venv / "bin"
    nb_params = (run / "notebooks" / "01_data.params.yaml").read_text()
    assert str(REPO) not in nb_params  # nothing read from the checkout
    executed = json.loads((run / "notebooks" / "01_data.ipynb").read_text())
    assert executed["metadata"]["papermill"]["input_path"].startswith(str(venv))  # the packaged notebook

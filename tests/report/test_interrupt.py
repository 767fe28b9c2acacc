"""Ctrl-C during ``cxr run``: running notebooks stop, run.json says interrupted, one line, resume.

A real ``cxr run paper_b --smoke`` subprocess gets SIGINT once its first stage finished; the
rerun (limited to that stage, to stay short) must skip it instead of executing it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CXR = [sys.executable, "-m", "cxrlib"]


def _run_json(out: Path) -> dict:
    runs = [d for d in (out / "paper_b").glob("*") if d.is_dir() and not d.is_symlink()]
    if not runs:
        return {}
    try:
        return json.loads((runs[0] / "run.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _alive_children(pid: int) -> list:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_sigint_stops_records_and_rerun_keeps_finished_stages(tmp_path: Path):
    out = tmp_path / "reports"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(CXR + ["run", "paper_b", "--smoke", "--out", str(out), "--jobs", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    deadline = time.monotonic() + 400
    children = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            stages = _run_json(out).get("stages", {})
            if stages.get("01_data", {}).get("status") == "done" and \
                    stages.get("02_source_pretraining", {}).get("status") == "running":
                break
            time.sleep(1)
        assert proc.poll() is None, "the run ended before the first stage finished"
        time.sleep(3)  # the source stage's notebook is executing
        children = _alive_children(proc.pid)
        assert children, "no papermill process to stop"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if "interrupted" in ln and ln.startswith("cxr run")]
    assert len(lines) == 1 and "02_source_pretraining" in lines[0], stderr
    assert not [c for c in children if c.is_running() and c.status() != "zombie"], "notebooks still running"
    info = _run_json(out)
    assert info["status"] == "interrupted"
    assert info["stages"]["01_data"]["status"] == "done"
    assert info["stages"]["02_source_pretraining"]["status"] == "interrupted"

    rerun = subprocess.run(CXR + ["run", "paper_b", "--smoke", "--out", str(out), "--only", "01_data"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 executed, 1 skipped" in rerun.stderr
    info = _run_json(out)
    assert info["stages"]["01_data"].get("skipped_at") and info["status"] == "partial"

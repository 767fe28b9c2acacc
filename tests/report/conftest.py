"""A smoke-sized run of both papers' phantom experiments, shared by the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_reports(tmp_path_factory) -> Path:
    """``cxr demo --smoke --out <tmp>``: both experiments through papermill; the reports root."""
    from cxrlib.cli import main

    out = tmp_path_factory.mktemp("reports")
    code = main(["demo", "--smoke", "--out", str(out)])
    assert code == 0, f"cxr demo --smoke failed (exit {code}); see the run folders under {out}"
    return out

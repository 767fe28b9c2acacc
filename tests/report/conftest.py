"""A smoke-sized run of both papers' phantom experiments, shared by the report tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_reports(tmp_path_factory) -> Path:
    """``cxr demo --smoke --out <tmp>``: both experiments through papermill; the reports root.

    Set ``CXR_TEST_REPORTS`` to the ``--out`` folder of an earlier ``cxr demo --smoke`` to
    check that run instead of executing a new one (for iterating on the checks).
    """
    given = os.environ.get("CXR_TEST_REPORTS")
    if given:
        return Path(given)
    from cxrlib.cli import main

    out = tmp_path_factory.mktemp("reports")
    code = main(["demo", "--smoke", "--out", str(out)])
    assert code == 0, f"cxr demo --smoke failed (exit {code}); see the run folders under {out}"
    return out

"""Shared fixtures. Tests that need the real sample data skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# The fingerprint store (cxrlib.data.fingerprints) of this test session, not the user's ~/.cache:
# tests (and the notebooks they run) neither read stale entries nor leave files in the home folder.
if "CXR_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["CXR_CACHE_DIR"] = tempfile.mkdtemp(prefix="cxr-test-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"real sample data not found at {path} (set CXR_SHARED_DATA); "
                    "it is only on development machines and in CI")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real public sample data (../shared/data)."""
    return _shared("")


@pytest.fixture(scope="session")
def nih_root() -> Path:
    return _shared("nih-chestxray14-sample")


@pytest.fixture(scope="session")
def cohen_root() -> Path:
    return _shared("covid-chestxray-dataset")


@pytest.fixture(scope="session")
def figure1_root() -> Path:
    return _shared("figure1-covid-chestxray-dataset")


@pytest.fixture(scope="session")
def fullres_root() -> Path:
    return _shared("fullres-sample")

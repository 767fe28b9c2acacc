"""The real-data configs end to end, offline, on a rehearsal root (``cxr data rehearse``).

A small phantom stand-in of NIH ChestX-ray14 (real label rows, whole patients), the Cohen and
Figure 1 COVID-19 collections and the Kermany set, in their published layouts, is generated in
seconds; ``paper_a_real`` and ``paper_b_real`` then run with ``--smoke`` exactly as on the real
data. Needs the official NIH label file of ``../shared/data`` (skips cleanly without it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrlib.data.rehearse import rehearse

LABELS = "nih-chestxray14-labels-full/Data_Entry_2017_v2020.csv.gz"


@pytest.fixture(scope="module")
def rehearsal_root(shared_data, tmp_path_factory) -> Path:
    labels = shared_data / LABELS
    if not labels.is_file():
        pytest.skip(f"{labels} not found")
    root = tmp_path_factory.mktemp("rehearsal")
    # scale 0.015 (~1,700 images): NIH pneumonia-only rows are rare (~0.3 %); paper_a_real trains on the
    # Cohen collection's covid19 rows only, so NIH alone must give each fold a few pneumonia images
    rehearse(root, ["nih"], scale=0.015, size=64, seed=0, labels=labels, progress=False)
    # enough COVID-19 images for the 5-fold source classifier of paper B's shortcut audit, which
    # stops the run when a source has fewer than 5 images (cxrlib.explain.shortcuts): the optional
    # Figure 1 collection (55 images at full size) is left out, as a small sample draws 3 of it
    rehearse(root, ["covid-chestxray"], scale=0.05, size=64, seed=0, progress=False)
    rehearse(root, ["kermany"], scale=0.02, size=64, seed=0, progress=False)
    # the configs name collections, not folders: NIH is found under its published name
    assert not (root / "nih-chestxray14-sample").exists() and (root / "nih-chestxray14").is_dir()
    return root


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("experiment", ["paper_a_real", "paper_b_real"])
def test_real_config_runs_end_to_end_on_a_rehearsal_root(experiment, rehearsal_root, tmp_path, monkeypatch):
    from cxrlib.cli import main

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cxr-cache"))  # fingerprint store of this run
    out = tmp_path / "reports"
    code = main(["run", experiment, "--data", str(rehearsal_root), "--smoke", "--out", str(out)])
    assert code == 0, f"cxr run {experiment} --smoke failed (exit {code}); see {out}"
    index = next(out.glob(f"{experiment}/*/index.html"))
    assert 'id="failure"' not in index.read_text()
    assert len(list(index.parent.rglob("*.ipynb"))) >= 6, "not every stage executed"

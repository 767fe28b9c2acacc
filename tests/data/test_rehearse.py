"""Rehearsal roots (cxrlib.data.rehearse): published layouts read back by the real adapters."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from cxrlib.data import rehearse as rh
from cxrlib.data.adapters import build_manifest, nih

LABELS = "nih-chestxray14-labels-full/Data_Entry_2017_v2020.csv.gz"
IMAGE_EXT = (".png", ".jpg", ".jpeg")


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _accounted(source: str, folder: Path) -> tuple[int, int, int]:
    """(image files written, manifest rows, skipped rows); every rehearsal row has its image."""
    res = build_manifest(source, folder)
    written = sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXT)
    return written, len(res.manifest), len(res.skipped)


@pytest.fixture(scope="module")
def covid_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rehearse")
    rh.rehearse(root, ["covid-chestxray", "figure1", "kermany"], scale=0.02, size=32, workers=1, progress=False)
    return root


def test_every_written_image_is_a_manifest_row_or_a_counted_skip(covid_root):
    for source, folder in (("covid-chestxray", "covid-chestxray-dataset"), ("figure1", "figure1-covid-chestxray-dataset"),
                           ("kermany", "chest_xray")):
        written, rows, skipped = _accounted(source, covid_root / folder)
        assert written > 0 and rows > 0, source
        assert rows + skipped == written, (source, written, rows, skipped)


def test_kermany_rehearsal_is_the_published_layout(covid_root):
    res = build_manifest("kermany", covid_root / "chest_xray")
    assert res.skipped.empty
    assert set(res.manifest["split"]) == {"train", "test", "val"}
    names = [Path(p).name for p in res.manifest["path"]]
    assert any(n.startswith("NORMAL2-IM-") for n in names) and any("_virus_" in n for n in names)
    assert any("_bacteria_" in n for n in names) and any(n.startswith("IM-") for n in names)
    # patients never cross the published folders
    assert res.manifest.groupby("patient_id")["split"].nunique().max() == 1


def test_figure1_metadata_is_latin1_with_stem_patientid(covid_root):
    folder = covid_root / "figure1-covid-chestxray-dataset"
    raw = (folder / "metadata.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # latin-1 bytes (é, °), as published
    meta = pd.read_csv(folder / "metadata.csv", dtype=str, encoding="latin-1", keep_default_na=False)
    assert {p.stem for p in (folder / "images").iterdir()} == set(meta["patientid"])


def test_cohen_metadata_has_the_published_columns_and_skips(covid_root):
    res = build_manifest("covid-chestxray", covid_root / "covid-chestxray-dataset")
    header = (covid_root / "covid-chestxray-dataset" / "metadata.csv").read_text().splitlines()[0]
    assert header == ",".join(rh.COHEN_COLUMNS)
    assert set(res.manifest["source"]) == {"covid-chestxray"}


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown collection"):
        rh.rehearse(tmp_path, ["nope"], progress=False)
    with pytest.raises(ValueError, match="scale"):
        rh.rehearse(tmp_path, ["kermany"], scale=2, progress=False)
    with pytest.raises(ValueError, match="--labels"):
        rh.rehearse(tmp_path, ["nih"], progress=False)
    (tmp_path / "chest_xray").mkdir()
    (tmp_path / "chest_xray" / "mine.txt").write_text("a user's own data")
    with pytest.raises(ValueError, match="not overwriting"):
        rh.rehearse(tmp_path, ["kermany"], scale=0.001, progress=False)
    assert (tmp_path / "chest_xray" / "mine.txt").is_file()


@pytest.mark.shared_data
def test_nih_rehearsal_real_rows_patients_boxes_and_determinism(shared_data, tmp_path):
    labels = shared_data / LABELS
    if not labels.is_file():
        pytest.skip(f"{labels} not found")
    a, b = tmp_path / "a", tmp_path / "b"
    rh.rehearse(a, ["nih"], scale=0.0005, size=32, seed=3, labels=labels, workers=1, progress=False)
    rh.rehearse(b, ["nih"], scale=0.0005, size=32, seed=3, labels=labels, workers=2, progress=False)
    assert _files(a) == _files(b)  # byte-identical whatever the number of workers
    folder = a / "nih-chestxray14"
    res = nih.build_manifest(folder)
    written = list(folder.glob("images_0*/images/*.png"))
    assert len(res.manifest) == len(written) > 0 and res.skipped.empty
    full = rh.read_nih_labels(labels)
    entry = pd.read_csv(folder / "Data_Entry_2017_v2020.csv", dtype=str, keep_default_na=False)
    # the real rows of whole patients: every image of a drawn patient is there
    assert entry["Patient ID"].nunique() < len(entry)
    assert set(full[full["Patient ID"].isin(entry["Patient ID"])]["Image Index"]) == set(entry["Image Index"])
    merged = entry.merge(full, on="Image Index", suffixes=("", "_full"))
    assert (merged["Finding Labels"] == merged["Finding Labels_full"]).all()
    boxes = nih.load_boxes(folder)  # only boxes of the images present, from the real list
    assert boxes["path"].map(lambda p: (folder / p).is_file()).all()
    c = rh.rehearse(a, ["nih"], scale=0.0005, size=32, seed=4, labels=labels, workers=1, progress=False)
    assert c["nih"]["images"] == len(list(folder.glob("images_0*/images/*.png")))  # rerun replaced ours

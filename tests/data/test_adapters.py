"""Adapters: tiny fake published layouts (tmp_path) and the real sample data (../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from cxrlib.data.adapters import ADAPTERS, build_manifest
from cxrlib.data.adapters import nih
from cxrlib.data.manifest import validate_manifest
from cxrlib.data.taxonomy import task_classes


def _img(path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=len(path.name) * 7 % 255).save(path, format=fmt)
    return path


def test_registry_has_every_published_source():
    assert set(ADAPTERS) == {"nih", "covid-chestxray", "figure1", "actualmed", "radiography-db",
                             "kermany", "folders", "csv"}
    import sys
    for key, fn in ADAPTERS.items():
        if key in ("folders", "csv"):  # generic: no single dataset to cite
            continue
        assert "https://" in sys.modules[fn.__module__].__doc__, fn.__module__


def test_unknown_source_and_option_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        build_manifest("nope", tmp_path)
    with pytest.raises(TypeError):
        build_manifest("kermany", tmp_path, colour="blue")


# ---------------------------------------------------------------- fake layouts
def test_actualmed(tmp_path):
    _img(tmp_path / "images" / "a1.png")
    _img(tmp_path / "images" / "a2.png")
    pd.DataFrame({"patientid": ["ACT-1", "ACT-2", "ACT-3", "ACT-4"],
                  "finding": ["COVID-19", "No finding", "", "COVID-19"],
                  "view": ["PA", "", "PA", "AP"], "modality": ["X-ray"] * 4,
                  "imagename": ["a1.png", "a2.png", "a3.png", "missing.png"]}).to_csv(tmp_path / "metadata.csv", index=False)
    res = ADAPTERS["actualmed"](tmp_path, task="paper_b")
    assert list(res.manifest["label"]) == ["covid19", "normal"]
    assert list(res.manifest["patient_id"]) == ["actualmed:ACT-1", "actualmed:ACT-2"]
    assert res.skip_counts().to_dict() == {"finding not given": 1, "image file not found": 1}
    assert validate_manifest(res.manifest, root=tmp_path, classes=task_classes("paper_b")) == []


def _radiography_layout(root: Path) -> None:
    for cls, n in (("COVID", 2), ("Normal", 3), ("Viral Pneumonia", 1), ("Lung_Opacity", 2)):
        for i in range(n):
            _img(root / cls / "images" / f"{cls}-{i + 1}.png")
            _img(root / cls / "masks" / f"{cls}-{i + 1}.png")  # lung masks must not be read as images
        pd.DataFrame({"FILE NAME": [f"{cls}-{i + 1}" for i in range(n)], "FORMAT": "PNG", "SIZE": "256*256",
                      "URL": [f"https://example.org/{cls}/{i + 1}" for i in range(n)]}
                     ).to_excel(root / f"{cls}.metadata.xlsx", index=False)


def test_radiography_db(tmp_path):
    _radiography_layout(tmp_path / "COVID-19_Radiography_Dataset")
    res = ADAPTERS["radiography-db"](tmp_path)
    assert len(res.manifest) == 8 and not res.manifest["path"].str.contains("masks").any()
    assert res.manifest["label"].eq("").all()
    assert any("leakage" in n for n in res.notes)
    urls = dict(zip(res.manifest["path"], res.manifest["origin_url"]))
    assert urls["COVID-19_Radiography_Dataset/Normal/images/Normal-3.png"] == "https://example.org/Normal/3"
    a = ADAPTERS["radiography-db"](tmp_path, task="paper_a").manifest["label"].value_counts().to_dict()
    assert a == {"normal": 3, "covid19": 2, "other_disease": 2, "pneumonia": 1}
    v = ADAPTERS["radiography-db"](tmp_path, task="paper_b_viral")
    assert v.manifest["label"].value_counts().to_dict() == {"normal": 3, "covid19": 2, "viral_pneumonia": 1}
    assert v.skip_counts().to_dict() == {"lung mask (not used)": 8, "not in paper_b_viral": 2}


def test_radiography_db_spreadsheets_without_openpyxl_are_noted(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openpyxl" else real(name, *a))
    _radiography_layout(tmp_path)
    res = ADAPTERS["radiography-db"](tmp_path)
    assert any("openpyxl" in n and "4 metadata spreadsheet" in n for n in res.notes)


def test_radiography_db_damaged_spreadsheet_is_named(tmp_path):
    _radiography_layout(tmp_path)
    (tmp_path / "Normal.metadata.xlsx").write_bytes(b"not really a spreadsheet")
    with pytest.raises(ValueError, match="Normal.metadata.xlsx: cannot read the metadata spreadsheet"):
        ADAPTERS["radiography-db"](tmp_path)


def test_kermany(tmp_path):
    base = tmp_path / "chest_xray"
    for split, name in (("train", "NORMAL/IM-0115-0001.jpeg"), ("train", "NORMAL/NORMAL2-IM-1427-0001.jpeg"),
                        ("train", "PNEUMONIA/person1_bacteria_1.jpeg"), ("test", "PNEUMONIA/person1_virus_6.jpeg"),
                        ("val", "PNEUMONIA/person22_virus_55.jpeg"), ("train", "PNEUMONIA/odd-name.jpeg")):
        _img(base / split / name, "JPEG")
    _img(tmp_path / "__MACOSX" / "chest_xray" / "train" / "NORMAL" / "IM-9999-0001.jpeg", "JPEG")
    res = ADAPTERS["kermany"](tmp_path)
    m = res.manifest.set_index("path")
    assert len(m) == 5
    assert m.loc["chest_xray/train/NORMAL/IM-0115-0001.jpeg", "patient_id"] == "kermany:IM-0115"
    assert m.loc["chest_xray/train/NORMAL/NORMAL2-IM-1427-0001.jpeg", "patient_id"] == "kermany:NORMAL2-IM-1427"
    # one child, two files (bacteria in train, virus in test): same patient id, different splits
    p1 = m[m["patient_id"] == "kermany:person1"]
    assert sorted(p1["findings"]) == ["bacteria", "virus"] and sorted(p1["split"]) == ["test", "train"]
    assert res.skip_counts().to_dict() == {"file name does not match the PNEUMONIA naming pattern": 1,
                                           "hidden folder skipped with 1 file(s)": 1}
    viral = ADAPTERS["kermany"](tmp_path, task="paper_b_viral").manifest
    assert sorted(viral["label"]) == ["normal", "normal", "viral_pneumonia", "viral_pneumonia"]


def test_kermany_missing_layout_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="NORMAL"):
        ADAPTERS["kermany"](tmp_path)


def test_folders(tmp_path):
    for cls in ("covid19", "Healthy", "junk"):
        _img(tmp_path / cls / f"{cls}_p1_a.png")
        _img(tmp_path / cls / "sub" / f"{cls}_p1_b.png")
    res = ADAPTERS["folders"](tmp_path, task="paper_b", class_map="Healthy:normal", patient_regex=r"_(p\d+)_")
    assert res.manifest["label"].value_counts().to_dict() == {"covid19": 2, "normal": 2}
    assert set(res.manifest["patient_id"]) == {"folders:p1"}
    assert res.skip_counts().to_dict() == {"folder 'junk' is not a class of paper_b (see class_map)": 2}
    with pytest.raises(ValueError, match="flu"):
        ADAPTERS["folders"](tmp_path, task="paper_b", class_map="Healthy:flu")


def test_generic_csv(tmp_path):
    for n in ("x1.png", "x2.png", "x3.png"):
        _img(tmp_path / "img" / n)
    pd.DataFrame({"file": ["x1.png", "x2.png", "x3.png", "gone.png"], "subject": ["s1", "s1", "s2", "s3"],
                  "dx": ["covid", "healthy", "flu", "covid"]}).to_csv(tmp_path / "table.csv", index=False)
    res = ADAPTERS["csv"](tmp_path, task="paper_b", csv="table.csv", path_column="file", patient_column="subject",
                          label_column="dx", class_map={"covid": "covid19", "healthy": "normal"}, image_dir="img")
    assert list(res.manifest["path"]) == ["img/x1.png", "img/x2.png"]
    assert list(res.manifest["label"]) == ["covid19", "normal"]
    reasons = res.skipped.set_index("file")["reason"].to_dict()
    assert reasons == {"img/x3.png": "dx 'flu' is not a class of paper_b (see class_map)",
                       "img/gone.png": "image file not found"}
    with pytest.raises(ValueError, match="missing column"):
        ADAPTERS["csv"](tmp_path, csv="table.csv", path_column="nope", label_column="dx")


def test_generic_csv_with_vocabulary(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    pd.DataFrame({"path": ["a.png", "b.png"], "finding": ["Pneumonia/Viral/COVID-19", "Mystery"]}).to_csv(
        tmp_path / "metadata.csv", index=False)
    res = ADAPTERS["csv"](tmp_path, task="paper_a", finding_column="finding", vocabulary="covid-chestxray")
    assert list(res.manifest["label"]) == ["covid19"]
    assert list(res.skipped["reason"]) == ["unmapped finding Mystery"]


def test_nih_official_layout_split_lists_and_missing_images(tmp_path):
    _img(tmp_path / "images_001" / "images" / "00000001_000.png")
    _img(tmp_path / "images_002" / "images" / "00000002_000.png")
    _img(tmp_path / "images_002" / "images" / "00000099_000.png")  # not in the CSV
    pd.DataFrame({"Image Index": ["00000001_000.png", "00000002_000.png", "00000003_000.png"],
                  "Finding Labels": ["No Finding", "Effusion|Pneumonia", "Mass"],
                  "Follow-up #": ["0", "0", "0"], "Patient ID": ["1", "2", "3"], "Patient Age": ["50", "60", "70"],
                  "Patient Sex": ["M", "F", "M"], "View Position": ["PA", "AP", "PA"]}).to_csv(
        tmp_path / "Data_Entry_2017_v2020.csv", index=False)
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n00000003_000.png\n")
    res = nih.build_manifest(tmp_path, task="paper_b")
    assert list(res.manifest["path"]) == ["images_001/images/00000001_000.png", "images_002/images/00000002_000.png"]
    assert list(res.manifest["label"]) == ["normal", "pneumonia"]
    assert list(res.manifest["split"]) == ["train", "test"]
    assert list(res.manifest["sex"]) == ["M", "F"]
    assert res.skipped.set_index("file")["reason"].to_dict() == {
        "00000003_000.png": "image file not found",
        "images_002/images/00000099_000.png": "image not listed in Data_Entry_2017_v2020.csv"}


# ---------------------------------------------------------------- real published files
def test_nih_sample(nih_root):
    res = nih.build_manifest(nih_root)
    m = res.manifest
    assert len(m) == 1605 and m["patient_id"].nunique() == 1281
    assert m["view"].value_counts().to_dict() == {"PA": 936, "AP": 669}
    assert res.skipped.empty and m["label"].eq("").all()
    counts = m["findings"].str.split("|").explode().value_counts()
    assert counts["No Finding"] == 600 and counts["Pneumonia"] == 516 and counts["Hernia"] == 23
    assert validate_manifest(m, root=nih_root) == []
    a = nih.build_manifest(nih_root, task="paper_a").manifest["label"].value_counts()
    assert a["normal"] == 600 and a["pneumonia"] == 516 and a["other_disease"] == 1605 - 600 - 516
    b = nih.build_manifest(nih_root, task="paper-b")
    assert len(b.manifest) == 1116 and b.skip_counts().to_dict() == {"not in paper_b": 489}


def test_nih_boxes(nih_root):
    boxes = nih.load_boxes(nih_root)
    assert len(boxes) == 60
    assert list(boxes.columns) == ["path", "finding", "x", "y", "w", "h", "frame_width", "frame_height"]
    assert "Infiltrate" not in set(boxes["finding"]) and (boxes["finding"] == "Infiltration").sum() == 3
    assert (boxes["x"] + boxes["w"] <= 1024).all() and (boxes["frame_width"] == 1024).all()
    paths = set(nih.build_manifest(nih_root).manifest["path"])
    assert set(boxes["path"]) <= paths


def _cohen_expected(root: Path) -> pd.DataFrame:
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    xr = meta[(meta["modality"] == "X-ray") & meta["view"].isin(["PA", "AP", "AP Supine"]) & (meta["finding"] != "todo")]
    return xr[[(root / "images" / f).is_file() for f in xr["filename"]]]


def test_cohen_collection(cohen_root):
    res = ADAPTERS["covid-chestxray"](cohen_root)
    expected = _cohen_expected(cohen_root)
    m = res.manifest
    # README: 667 X-ray rows; PA 314, AP Supine 137, AP 119 frontal; 58 lateral, 35 blank views
    # the upstream table lists 4 frontal images twice (patients 285/339 and 287/340): kept once
    assert len(m) == len(expected.drop_duplicates("filename")) == 527
    assert res.skip_counts()["image already listed on an earlier row"] == 4
    assert set(m["view"]) == {"PA", "AP", "AP Supine"}
    skipped = res.skip_counts()
    assert skipped["view L is not frontal"] == 58 and skipped["view not given"] == 35
    assert skipped["modality CT is not X-ray"] == 84
    assert len(m) + len(res.skipped) == 751  # every metadata row is kept or skipped with a reason
    assert m["patient_id"].str.startswith("covid-chestxray:").all()
    assert (m["findings"] == "COVID-19|ARDS").sum() == 12
    assert validate_manifest(m, root=cohen_root) == []
    labels = ADAPTERS["covid-chestxray"](cohen_root, task="paper_a").manifest["label"].value_counts()
    expected = expected.drop_duplicates("filename")
    n_covid = expected["finding"].str.startswith("COVID-19").sum()
    assert labels["covid19"] == n_covid and labels["normal"] == (expected["finding"] == "No Finding").sum()


def test_figure1_collection(figure1_root):
    res = ADAPTERS["figure1"](figure1_root, task="paper_a")
    m = res.manifest
    # README: 55 images: 35 COVID-19, 2 pneumonia, 3 no finding, 15 blank finding
    assert m["label"].value_counts().to_dict() == {"covid19": 35, "normal": 3, "pneumonia": 2}
    assert res.skip_counts().to_dict() == {"finding not given": 15}
    assert all((figure1_root / p).is_file() for p in m["path"])
    assert (m["path"].map(lambda p: Path(p).stem) == m["patient_id"].str.removeprefix("figure1:")).all()

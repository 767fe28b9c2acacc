"""Nothing silently dropped: for every adapter, files on disk = manifest rows + reported skips.

Each layout holds what real downloads hold: every decodable extension (also upper case,
``.jfif``, ``.webp``), one name in two subfolders, hidden files and folders, stray files, a
non-UTF-8 file name; metadata tables with empty patient ids, repeated rows and paths
that leave the data root.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.data.adapters import ADAPTERS

EXTS = {".png": "PNG", ".PNG": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jfif": "JPEG", ".webp": "WEBP",
        ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def _img(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = EXTS.get(path.suffix, "PNG")
    arr = np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(arr).save(path, fmt)
    return path


def _junk(folder: Path) -> None:
    """What downloads carry besides images: hidden file, hidden folder, a text file, a bad name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "notes.txt").write_text("x")
    _img(folder / ".thumbs" / "t.png")
    fd = os.open(os.fsencode(folder) + b"/bad\xff.png", os.O_WRONLY | os.O_CREAT)
    os.close(fd)


def _all_files(root: Path, exclude: tuple[str, ...] = ()) -> set[str]:
    out = set()
    for dirpath, _, files in os.walk(os.fsencode(root)):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), os.fsencode(root)).decode("utf-8", "backslashreplace")
            if rel not in exclude:
                out.add(rel)
    return out


def assert_accounted(root: Path, res, exclude: tuple[str, ...] = ()) -> None:
    """Every file is a manifest row or a skip (by path, by published name, or inside a skipped folder)."""
    files = _all_files(root, exclude)
    rows = list(res.manifest["path"])
    assert len(rows) == len(set(rows)), "a path is in the manifest twice"
    skipped = set(res.skipped["file"])
    folders = [f + "/" for f, r in zip(res.skipped["file"], res.skipped["reason"]) if "folder skipped" in r]
    missing = {f for f in files - set(rows) - skipped
               if f.rsplit("/", 1)[-1] not in skipped and not f.startswith(tuple(folders))}
    assert not missing, f"files neither in the manifest nor skipped: {sorted(missing)}"
    file_skips = set(res.skipped.loc[res.skipped["source_row"] == "", "file"])  # (table rows may repeat a file)
    assert not set(rows) & file_skips, "a file is both a row and a skip"


def test_folders_every_extension_same_name_and_stray_files(tmp_path):
    for i, ext in enumerate(EXTS):
        _img(tmp_path / "covid19" / f"c{i}{ext}", i)
    _img(tmp_path / "normal" / "a" / "x.png", 50)
    _img(tmp_path / "normal" / "b" / "x.png", 51)  # same name, other subfolder: a second image
    _img(tmp_path / "top.png", 52)                 # not in a class folder
    _junk(tmp_path / "normal")
    res = ADAPTERS["folders"](tmp_path, task="paper_b")
    assert (res.manifest["label"] == "covid19").sum() == len(EXTS)
    assert {"normal/a/x.png", "normal/b/x.png"} <= set(res.manifest["path"])
    reasons = res.skip_counts().to_dict()
    assert reasons["hidden file"] == 1 and reasons["not an image file (extension .txt)"] == 1
    assert reasons["file at the top of the collection, not in a class folder"] == 1
    assert any("not valid UTF-8" in r for r in reasons)
    assert_accounted(tmp_path, res)


def test_kermany_files_outside_the_layout_are_skips(tmp_path):
    base = tmp_path / "chest_xray"
    _img(base / "train" / "NORMAL" / "IM-0001-0001.jfif", 1)
    _img(base / "train" / "NORMAL" / "IM-0002-0001.WEBP".replace("WEBP", "webp"), 2)
    _img(base / "train" / "PNEUMONIA" / "person1_virus_1.jpeg", 3)
    _img(base / "train" / "stray.jpeg", 4)
    _img(base / "chest_xray" / "train" / "NORMAL" / "IM-0001-0001.jpeg", 5)  # nested second copy
    _junk(base / "test" / "PNEUMONIA")
    res = ADAPTERS["kermany"](tmp_path)
    assert len(res.manifest) == 3
    assert_accounted(tmp_path, res)


def test_radiography_db_masks_and_extensions(tmp_path):
    data = tmp_path / "COVID-19_Radiography_Dataset"
    _img(data / "COVID" / "images" / "COVID-1.png", 1)
    _img(data / "COVID" / "images" / "COVID-2.JPG", 2)
    _img(data / "COVID" / "masks" / "COVID-1.png", 3)
    _img(data / "Normal" / "Normal-1.webp", 4)
    _junk(data / "Normal")
    res = ADAPTERS["radiography-db"](tmp_path)
    assert len(res.manifest) == 3
    assert_accounted(tmp_path, res)


def test_nih_official_layout_same_name_and_empty_patient(tmp_path):
    names = ["00000001_000.png", "00000002_000.png", "00000003_000.png"]
    _img(tmp_path / "images_001" / "images" / names[0], 1)
    _img(tmp_path / "images_002" / "images" / names[1], 2)
    _img(tmp_path / "images_002" / "images" / names[2], 3)
    _img(tmp_path / "images_003" / "images" / names[0], 4)  # the same name again
    _junk(tmp_path / "images_003" / "images")
    pd.DataFrame({"Image Index": names, "Finding Labels": ["No Finding"] * 3, "Patient ID": ["1", "", "3"],
                  "View Position": ["PA"] * 3}).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    res = ADAPTERS["nih"](tmp_path)
    assert sorted(res.manifest["patient_id"]) == ["nih:1", "nih:3"]
    reasons = dict(zip(res.skipped["file"], res.skipped["reason"]))
    assert reasons["images_002/images/00000002_000.png"] == "patient id not given"
    assert reasons["images_003/images/00000001_000.png"].startswith("same file name as images_001/")
    assert_accounted(tmp_path, res, exclude=("Data_Entry_2017.csv",))


@pytest.mark.parametrize("adapter, file_col", [("covid-chestxray", "filename"), ("actualmed", "imagename")])
def test_cohen_schema_unlisted_images_empty_patient_and_escaping_paths(tmp_path, adapter, file_col):
    for i in range(3):
        _img(tmp_path / "images" / f"i{i}.jfif", i)
    _img(tmp_path / "images" / "unlisted.png", 9)
    _junk(tmp_path / "images")
    table = pd.DataFrame({"patientid": ["1", "", "3"], "finding": ["COVID-19"] * 3, "view": ["PA"] * 3,
                          "modality": ["X-ray"] * 3, file_col: ["i0.jfif", "i1.jfif", "i2.jfif"]})
    table.to_csv(tmp_path / "metadata.csv", index=False)
    res = ADAPTERS[adapter](tmp_path)
    assert list(res.manifest["path"]) == ["images/i0.jfif", "images/i2.jfif"]
    assert "patient id not given" in set(res.skipped["reason"])
    assert "image not listed in metadata.csv" in set(res.skipped["reason"])
    assert_accounted(tmp_path, res, exclude=("metadata.csv",))
    bad = "../../etc/passwd" if adapter == "actualmed" else "/etc/passwd"
    table.loc[2, file_col] = bad
    table.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=rf"metadata.csv: line 4, column '{file_col}': path .* leaves"):
        ADAPTERS[adapter](tmp_path)


def test_figure1_second_image_for_one_id(tmp_path):
    _img(tmp_path / "images" / "COVID-00001.jpg", 1)
    _img(tmp_path / "images" / "COVID-00001.png", 2)
    _img(tmp_path / "images" / "COVID-00002.webp", 3)
    pd.DataFrame({"patientid": ["COVID-00001", "COVID-00002"], "finding": ["COVID-19"] * 2,
                  "view": ["", ""]}).to_csv(tmp_path / "metadata.csv", index=False, encoding="latin-1")
    res = ADAPTERS["figure1"](tmp_path)
    assert len(res.manifest) == 2 and any(r.startswith("second image") for r in res.skipped["reason"])
    assert_accounted(tmp_path, res, exclude=("metadata.csv",))


def test_generic_csv_duplicates_escapes_and_path_template(tmp_path):
    for i in range(3):
        _img(tmp_path / "png" / f"id{i}.png", i)
    table = pd.DataFrame({"image_id": ["id0", "id1", "id1", "id2", "id0"], "subject": ["a", "b", "b", "", "a2"],
                          "dx": ["covid19"] * 5})
    table.to_csv(tmp_path / "t.csv", index=False)
    res = ADAPTERS["csv"](tmp_path, task="paper_b", csv="t.csv", path_template="png/{image_id}.png",
                          patient_column="subject", label_column="dx")
    _img(tmp_path / "png" / "unlisted.webp", 7)
    _junk(tmp_path / "png")
    res = ADAPTERS["csv"](tmp_path, task="paper_b", csv="t.csv", path_template="png/{image_id}.png",
                          patient_column="subject", label_column="dx")
    assert list(res.manifest["path"]) == ["png/id0.png", "png/id1.png"]
    reasons = dict(zip(res.skipped["source_row"], res.skipped["reason"]))
    assert {k: v for k, v in reasons.items() if k} == {"4": "path already listed on line 3",
                                                        "5": "patient id not given",
                                                        "6": "path already listed on line 2"}
    assert "image not listed in t.csv" in set(res.skipped["reason"])
    assert_accounted(tmp_path, res, exclude=("t.csv",))
    for bad in ("../x.png", "/etc/passwd"):
        pd.DataFrame({"path": ["png/id0.png", bad], "dx": ["covid19"] * 2}).to_csv(tmp_path / "m.csv", index=False)
        with pytest.raises(ValueError, match=r"m.csv: line 3, column 'path': path .* leaves"):
            ADAPTERS["csv"](tmp_path, csv="m.csv", label_column="dx")


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"path,dx\na.png,covid19\nb.png,covid19,extra\n", "line 3: 3 fields where the header has 2"),
    ("path,dx\na.png,covid19\nb\u00e9.png,covid19\n".encode("latin-1"), "line 3: not valid utf-8 text .*"
                                                                      "--opt encoding=latin-1"),
])
def test_bad_tables_name_file_line_and_fix(tmp_path, content, message):
    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(ValueError, match=rf"t.csv: {message}"):
        ADAPTERS["csv"](tmp_path, csv="t.csv", label_column="dx")


def test_latin1_cohen_table_reads_with_the_encoding_option(tmp_path):
    _img(tmp_path / "images" / "a.png")
    pd.DataFrame({"patientid": ["1"], "finding": ["COVID-19"], "view": ["PA"], "modality": ["X-ray"],
                  "filename": ["a.png"], "notes": ["fi\u00e8vre"]}).to_csv(tmp_path / "metadata.csv", index=False,
                                                                            encoding="latin-1")
    with pytest.raises(ValueError, match="encoding=latin-1"):
        ADAPTERS["covid-chestxray"](tmp_path)
    assert len(ADAPTERS["covid-chestxray"](tmp_path, encoding="latin-1").manifest) == 1

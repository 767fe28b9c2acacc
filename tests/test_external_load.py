"""External collections are read by the data path's entry reader: same rows, every file accounted for.

A tiny Kermany layout (Kermany et al., Cell 2018: ``chest_xray/<split>/NORMAL|PNEUMONIA``) with
files the adapter must skip is read as an ``external:`` entry and as a ``data:`` entry.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.data.entries import Entry, read_entries
from cxrlib.validation.collections import REMOVED_COLUMNS, load_collection

CLASSES = ["normal", "pneumonia", "other_disease", "covid19"]


def _img(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).resize((40, 40)).save(path, format="JPEG")


def _kermany(root: Path, folder: str = "chest_xray") -> list[str]:
    """A Kermany layout under ``root/folder``; returns every file on disk (relative to ``root``)."""
    base = root / folder
    _img(base / "train" / "NORMAL" / "IM-0001-0001.jpeg", 1)
    _img(base / "train" / "NORMAL" / "IM-0002-0001.jpeg", 2)
    _img(base / "test" / "NORMAL" / "NORMAL2-IM-0003-0001.jpeg", 3)
    _img(base / "train" / "PNEUMONIA" / "person1_virus_1.jpeg", 4)
    _img(base / "test" / "PNEUMONIA" / "person2_bacteria_1.jpeg", 5)
    _img(base / "train" / "stray.jpeg", 6)  # not in a class folder: a skip
    (base / "train" / "NORMAL" / ".DS_Store").write_bytes(b"x")  # hidden: a skip
    (base / "test" / "NORMAL" / "notes.txt").write_text("x")  # not an image: a skip
    return sorted(Path(os.path.relpath(p, root)).as_posix() for p in base.rglob("*") if p.is_file())


def test_external_entry_is_read_like_a_data_entry_and_every_file_is_counted(tmp_path):
    files = _kermany(tmp_path)
    df, removed = load_collection({"name": "kids", "collection": "kermany", "task": "paper_a",
                                   "labels": ["normal"]}, tmp_path, "paper_a")
    assert list(removed.columns[:len(REMOVED_COLUMNS)]) == REMOVED_COLUMNS
    # files on disk = rows + removed rows, each removed row naming its file under the data root
    assert sorted(df["path"].tolist() + removed["path"].tolist()) == files
    assert set(df["label"]) == {"normal"} and len(df) == 3
    why = removed.set_index("path")["reason"]
    assert why["chest_xray/train/PNEUMONIA/person1_virus_1.jpeg"] == \
        "class pneumonia not taken from this source in external.kids"
    assert why["chest_xray/train/NORMAL/.DS_Store"] == "hidden file"
    assert (removed["collection"] == "kids").all() and (removed["reason"] != "").all()
    # one home: the data path reads the same entry into the same rows and the same reasons
    man, aside, found, _ = read_entries([Entry.from_mapping({"collection": "kermany", "task": "paper_a",
                                                             "labels": ["normal"]})],
                                        "target", "paper_a", tmp_path, {}, name="external.kids")
    pd.testing.assert_frame_equal(df.astype(str), man.reset_index(drop=True).astype(str))
    assert sorted(zip(aside["file"], aside["reason"])) == sorted(zip(removed["path"], removed["reason"]))
    assert found["kermany"] == tmp_path / "chest_xray"


def test_older_form_and_dataset_override_find_the_same_folder(tmp_path):
    _kermany(tmp_path, "pediatric")  # not a published folder name
    with pytest.raises(FileNotFoundError, match=r"external\.kids: .*chest_xray"):
        load_collection({"name": "kids", "collection": "kermany"}, tmp_path, "paper_a")
    old, _ = load_collection({"name": "kids", "adapter": "kermany", "root": "pediatric"}, tmp_path, "paper_a")
    new, _ = load_collection({"name": "kids", "collection": "kermany"}, tmp_path, "paper_a",
                             ["kermany=pediatric"])  # cxr run --dataset kermany=pediatric
    assert len(old) == 5 and old["path"].str.startswith("pediatric/").all()
    pd.testing.assert_frame_equal(old, new)


def test_missing_and_mistyped_entries_name_the_external_entry(tmp_path):
    df, removed = load_collection({"name": "fig", "collection": "figure1", "optional": True}, tmp_path, "paper_a")
    assert df is None and removed["collection"].tolist() == ["fig"]  # one row, naming the folders looked for
    assert removed["reason"].iat[0].startswith("optional collection not found (tried Figure1-COVID-chestxray-dataset")
    with pytest.raises(FileNotFoundError, match=r"external\.fig: .*figure1"):
        load_collection({"name": "fig", "collection": "figure1"}, tmp_path, "paper_a")
    _kermany(tmp_path)
    with pytest.raises(ValueError, match=r"external\.kids: .*normall"):
        load_collection({"name": "kids", "collection": "kermany", "labels": ["normall"]}, tmp_path, "paper_a")
    with pytest.raises(ValueError, match=r"external\.kids: unknown key.*lables"):
        load_collection({"name": "kids", "collection": "kermany", "lables": ["normal"]}, tmp_path, "paper_a")


def test_stage_accounts_for_every_file_after_training_overlap(tmp_path):
    """The stage's removed table = the entry's set-aside rows + the stage's own removals."""
    from cxrlib.validation.stage import external_collections

    files = _kermany(tmp_path)
    trained = "chest_xray/train/NORMAL/IM-0001-0001.jpeg"
    copy = tmp_path / "train_copy.jpeg"
    shutil.copy(tmp_path / "chest_xray/test/NORMAL/NORMAL2-IM-0003-0001.jpeg", copy)  # a training duplicate
    training = pd.DataFrame([dict(path=trained, patient_id="t1", source="nih", view="PA", findings="", label="normal"),
                             dict(path="train_copy.jpeg", patient_id="t2", source="nih", view="PA", findings="",
                                  label="normal")])
    cfg = {"task": "paper_a", "external": {"collections": [
        {"name": "kids", "collection": "kermany", "labels": ["normal"]},
        {"name": "fig", "collection": "figure1", "optional": True}]}}
    kept, removed = external_collections(cfg, tmp_path, training, CLASSES)
    assert list(kept) == ["kids"]
    kids = removed[removed["collection"] == "kids"]
    assert sorted(kept["kids"]["path"].tolist() + kids["path"].tolist()) == files
    why = kids.set_index("path")["reason"]
    assert why[trained] == "same file as a training image"
    assert why["chest_xray/test/NORMAL/NORMAL2-IM-0003-0001.jpeg"] == "duplicates a training image"
    assert kept["kids"]["path"].tolist() == ["chest_xray/train/NORMAL/IM-0002-0001.jpeg"]
    assert removed[removed["collection"] == "fig"]["reason"].str.startswith("optional collection not found").all()

"""The one preparation path: build-manifests and a run's data stage agree; folder names; overrides."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.cli import main
from cxrlib.data.adapters.collections import COLLECTIONS, find_collection
from cxrlib.data.manifest import read_manifest
from cxrlib.data.prepare import Entry, Plan, prepare
from cxrlib.data.splits import check_leakage
from cxrlib.report.datastage import prepare_data

NIH_FINDINGS = ["No Finding", "Pneumonia", "Effusion", "No Finding|Hernia"]


def _noise(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(path)


def make_root(root: Path, nih_folder: str = "nih-chestxray14") -> Path:
    """A tiny NIH collection (official images_00N/images layout) and a tiny Cohen collection.

    Planted: one Cohen image is a byte copy of an NIH image (a cross-collection duplicate
    of two patients), and one Cohen image is listed under two patient ids.
    """
    nih = root / nih_folder
    rows = []
    for i in range(24):
        name = f"{i:08d}_000.png"
        _noise(nih / f"images_00{1 + i % 2}" / "images" / name, seed=i)
        rows.append({"Image Index": name, "Finding Labels": NIH_FINDINGS[i % 4], "Follow-up #": "0",
                     "Patient ID": str(i // 2), "Patient Age": "50", "Patient Gender": "M", "View Position": "PA"})
    pd.DataFrame(rows).to_csv(nih / "Data_Entry_2017.csv", index=False)
    cohen = root / "covid-chestxray-dataset"
    rows = []
    for i in range(10):
        name = f"c{i}.png"
        _noise(cohen / "images" / name, seed=100 + i)
        rows.append(dict(patientid=str(i), finding="COVID-19", view="PA", modality="X-ray", folder="images",
                         filename=name))
    shutil.copy(nih / "images_001" / "images" / "00000000_000.png", cohen / "images" / "c0.png")
    rows.append(dict(patientid="99", finding="COVID-19", view="PA", modality="X-ray", folder="images",
                     filename="c1.png"))
    pd.DataFrame(rows).to_csv(cohen / "metadata.csv", index=False)
    return root


CFG = {
    "name": "tiny_real", "task": "paper_a",
    "data": {"kind": "real",
             "target": {"adapters": [{"collection": "covid-chestxray", "task": "paper_a", "classes": ["covid19"]},
                                     {"collection": "nih", "task": "paper_a",
                                      "classes": ["normal", "pneumonia", "other_disease"]}]},
             "dedup": {"prefer": ["covid-chestxray", "nih"]}},
    "split": {"kind": "kfold", "k": 2, "seed": 0},
    "strategies": {"scratch": {}},
}


def test_build_manifests_and_data_stage_write_identical_manifests(tmp_path, capsys):
    root = make_root(tmp_path / "data")
    out = tmp_path / "dm"
    assert main(["data", "build-manifests", str(root), "-o", str(out), "--recipe", "paper_a", "--folds", "2",
                 "--test-size", "0", "--val-size", "0"]) == 0, capsys.readouterr()
    stage = tmp_path / "stage"
    stage.mkdir()
    info = prepare_data(CFG, tmp_path / "run", stage, root)
    built, staged = (out / "paper_a.csv").read_text(), Path(info["target"]).read_text()
    assert built == staged
    df = read_manifest(out / "paper_a.csv")
    # the byte copy: one image kept, its two patients are one group in one fold
    assert "covid-chestxray-dataset/images/c0.png" in set(df["path"])
    assert "nih-chestxray14/images_001/images/00000000_000.png" not in set(df["path"])
    aside = pd.read_csv(stage / "set_aside.csv", dtype=str, keep_default_na=False)
    assert (aside["reason"] == "duplicate of another target image").sum() == 1
    assert (aside["reason"] == "image already listed on an earlier row").sum() == 1
    # nothing silently dropped: every listed NIH/Cohen row is in the manifest or set aside
    assert len(df) + len(aside) == 24 + 11
    assert not check_leakage(df, group_col="patient_group") and not check_leakage(df)


@pytest.mark.parametrize("name", COLLECTIONS["nih"].folders[:4] + ("ChestXRay2017/chest_xray",))
def test_published_folder_names_are_found(tmp_path, name):
    key = "kermany" if "chest_xray" in name else "nih"
    (tmp_path / name).mkdir(parents=True)
    assert find_collection(tmp_path, key) == tmp_path / name


def test_missing_collection_lists_every_name_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        find_collection(tmp_path, "nih")
    for name in COLLECTIONS["nih"].folders:
        assert name in str(err.value)
    assert "--dataset nih=PATH" in str(err.value)


def test_dataset_override_outside_the_root(tmp_path):
    make_root(tmp_path / "elsewhere", nih_folder="my_nih_copy")
    root = tmp_path / "root"
    shutil.move(str(tmp_path / "elsewhere" / "covid-chestxray-dataset"), root / "covid-chestxray-dataset")
    plan = Plan(task="paper_a", target=[Entry("nih", "nih"), Entry("covid-chestxray", "covid-chestxray")],
                folds=2, datasets={"nih": str(tmp_path / "elsewhere" / "my_nih_copy")})
    prep = prepare(plan, root)
    assert prep.root == tmp_path
    assert prep.folders == {"nih": "elsewhere/my_nih_copy", "covid-chestxray": "root/covid-chestxray-dataset"}
    assert all((prep.root / p).is_file() for p in prep.target["path"])
    assert not any(p.startswith(("/", "..")) for p in prep.target["path"])


def test_data_stage_source_loses_target_duplicates(tmp_path):
    root = make_root(tmp_path / "data")
    nih1 = "nih-chestxray14/images_002/images/00000001_000.png"  # Pneumonia: not a target class below
    shutil.copy(root / nih1, root / "covid-chestxray-dataset" / "images" / "c2.png")
    target = {"adapters": [CFG["data"]["target"]["adapters"][0],
                           {"collection": "nih", "task": "paper_a", "classes": ["normal"]}]}
    cfg = {**CFG, "strategies": {"domain_extension": {}},
           "data": {**CFG["data"], "target": target,
                    "source": {"adapters": [{"collection": "nih", "task": "nih14"}]}}}
    stage = tmp_path / "stage"
    stage.mkdir()
    info = prepare_data(cfg, tmp_path / "run", stage, root)
    source, target = read_manifest(info["source"]), read_manifest(info["target"])
    assert not set(source["path"]) & set(target["path"])
    aside = pd.read_csv(stage / "set_aside.csv", dtype=str, keep_default_na=False)
    dup = aside[aside["reason"] == "source image duplicates a target image"]
    assert dup["file"].tolist() == [nih1]
    same = aside[aside["reason"].str.startswith("same image file is a target image")]
    assert len(same) > 0 and same["file"].str.startswith("nih-chestxray14/").all()


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["nih-chestxray14", "ChestX-ray14", "CXR8"])
def test_shared_nih_under_published_names(shared_data, tmp_path, name):
    (tmp_path / name).symlink_to(shared_data / "nih-chestxray14-sample")
    plan = Plan(task="paper_a", target=[Entry("nih", "nih")], folds=0, dedup=False)
    prep = prepare(plan, tmp_path)
    assert prep.folders == {"nih": name} and len(prep.target) > 1000
    (tmp_path / name).rename(tmp_path / "my-nih")  # an unpublished name: only the override finds it
    with pytest.raises(FileNotFoundError, match=name):
        prepare(plan, tmp_path)
    plan.datasets = {"nih": "my-nih"}
    assert prepare(plan, tmp_path).folders == {"nih": "my-nih"}


def test_typos_in_classes_and_dataset_keys_are_errors(tmp_path):
    root = make_root(tmp_path / "data")
    plan = Plan(task="paper_a", target=[Entry("nih", "nih", classes=("normall",))], folds=2, dedup=False)
    with pytest.raises(ValueError, match=r"classes \['normall'\] are not classes of paper_a"):
        prepare(plan, root)
    plan = Plan(task="paper_a", target=[Entry("nih", "nih")], folds=2, dedup=False, datasets={"nhi": "x"})
    with pytest.raises(ValueError, match="--dataset nhi: no data entry names this collection"):
        prepare(plan, root)


def test_build_manifests_with_a_dataset_elsewhere(tmp_path, capsys):
    make_root(tmp_path / "elsewhere", nih_folder="nih_copy")
    root = tmp_path / "root"
    root.mkdir()
    (root / "covid-chestxray-dataset").symlink_to(tmp_path / "elsewhere" / "covid-chestxray-dataset")
    out = tmp_path / "dm"
    argv = ["data", "build-manifests", str(root), "-o", str(out), "--folds", "2", "--test-size", "0",
            "--val-size", "0", "--dataset", f"nih={tmp_path / 'elsewhere' / 'nih_copy'}"]
    assert main(argv) == 0, capsys.readouterr()
    nih14 = read_manifest(out / "source_nih14.csv")
    assert len(nih14) == 24 and nih14["path"].str.startswith("elsewhere/nih_copy/").all()
    assert main(argv[:-2] + ["--dataset", "nhi=/x"]) == 2
    assert "unknown collection" in capsys.readouterr().err

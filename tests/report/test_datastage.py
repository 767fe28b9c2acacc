"""The data stage: phantoms -> manifests with patient-grouped folds, duplicates, leakage check."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cxrlib.data.manifest import read_manifest
from cxrlib.data.splits import check_leakage
from cxrlib.report.datastage import cap_per_class, load_data_info, prepare_data

CFG = {
    "name": "tiny", "task": "paper_a",
    "data": {"kind": "phantoms", "image_size": 32, "source": {"task": "source", "n": 16, "seed": 1},
             "target": {"task": "paper_a", "n": 32, "seed": 2}, "dedup": True},
    "split": {"kind": "kfold", "k": 2, "seed": 0},
    "strategies": {"scratch": {}, "domain_extension": {}},
}


def test_phantom_data_stage(tmp_path: Path):
    stage = tmp_path / "stages" / "01_data"
    stage.mkdir(parents=True)
    info = prepare_data(CFG, tmp_path, stage)
    assert info == load_data_info(tmp_path)
    target, source = read_manifest(info["target"]), read_manifest(info["source"])
    root = Path(info["root"])
    assert len(target) == info["n_target"] and len(source) == info["n_source"]
    # one data root: every image and mask path resolves under it
    for df in (target, source):
        assert all((root / p).is_file() for p in df["path"])
        assert all((root / p).is_file() for p in df["mask_path"] if p)
    assert set(target["fold"]) == {"0", "1"} and (target["label"] != "").all()
    assert not check_leakage(target, pd.read_csv(stage / "duplicates.csv"))
    # nothing disappears silently: kept + set aside = generated
    aside = pd.read_csv(stage / "set_aside.csv")
    assert len(target) + int((aside["part"] == "target").sum()) == 32 if len(aside) else len(target) == 32


def test_source_not_built_when_no_strategy_needs_it(tmp_path: Path):
    cfg = {**CFG, "strategies": {"scratch": {}}, "split": {"kind": "holdout", "test_size": 0.25,
                                                            "val_size": 0.25, "seed": 0}}
    stage = tmp_path / "s"
    stage.mkdir()
    info = prepare_data(cfg, tmp_path, stage)
    assert info["source"] == "" and not (tmp_path / "data" / "source").exists()
    assert set(read_manifest(info["target"])["split"]) == {"train", "val", "test"}


def test_real_data_needs_a_root(tmp_path: Path):
    cfg = {**CFG, "strategies": {"scratch": {}},
           "data": {"kind": "real", "target": {"adapters": [{"adapter": "nih", "root": "x"}]}}}
    with pytest.raises(ValueError, match="--data"):
        prepare_data(cfg, tmp_path, tmp_path)
    with pytest.raises(FileNotFoundError, match="collection 'nih'"):
        prepare_data(cfg, tmp_path, tmp_path, data_root=tmp_path)


def test_cap_per_class_is_seeded_and_complete():
    df = pd.DataFrame({"path": [f"p{i}" for i in range(10)], "label": ["a"] * 7 + ["b"] * 3})
    kept, aside = cap_per_class(df, 4, seed=3)
    assert kept["label"].value_counts().to_dict() == {"a": 4, "b": 3}
    assert sorted(kept["path"].tolist() + aside["path"].tolist()) == sorted(df["path"])
    assert kept.equals(cap_per_class(df, 4, seed=3)[0])


def test_run_dataset_option_reaches_the_plan(tmp_path: Path):
    from cxrlib.report.cli import _dataset_sets
    from cxrlib.report.config import load_experiment
    from cxrlib.report.datastage import plan_from_config
    from cxrlib.report.runner import EXPERIMENTS_DIR

    sets = _dataset_sets([f"nih={tmp_path}/my nih: copy"])
    cfg = load_experiment(EXPERIMENTS_DIR / "paper_a_real.yaml", smoke=True, overrides=sets)
    plan = plan_from_config(cfg)
    assert plan.datasets == {"nih": f"{tmp_path}/my nih: copy"}
    assert [e.collection for e in plan.target] == ["nih", "covid-chestxray"]  # figure1 is external
    with pytest.raises(ValueError, match="COLLECTION=PATH"):
        _dataset_sets(["nih"])
    # a collection only the external block reads: for 07_external, not refused by the data stage
    ext = load_experiment(EXPERIMENTS_DIR / "paper_a_real.yaml", smoke=True,
                          overrides=_dataset_sets([f"nih={tmp_path}", f"figure1={tmp_path}/f1"]))
    assert plan_from_config(ext).datasets == {"nih": str(tmp_path)}
    typo = load_experiment(EXPERIMENTS_DIR / "paper_a_real.yaml", smoke=True,
                           overrides=_dataset_sets([f"figure_1={tmp_path}/f1"]))
    with pytest.raises(ValueError, match="figure_1: no data or external entry"):
        plan_from_config(typo)


def test_adapter_entry_labels_are_checked():
    from cxrlib.data.prepare import Entry

    e = Entry.from_mapping({"collection": "covid-chestxray", "task": "paper_a", "labels": ["covid19"]})
    assert e.classes == ("covid19",) and e.adapter == "covid-chestxray"
    assert Entry.from_mapping({"collection": "nih", "labels": "normal"}).classes == ("normal",)
    with pytest.raises(ValueError, match="both classes and labels"):
        Entry.from_mapping({"collection": "nih", "labels": ["normal"], "classes": ["normal"]})
    with pytest.raises(ValueError, match="unknown key"):
        Entry.from_mapping({"collection": "nih", "label": ["normal"]})


@pytest.mark.shared_data
def test_cohen_non_covid_rows_are_held_out_and_evaluated_externally(shared_data, tmp_path: Path):
    """paper_a_real trains on the Cohen collection's COVID-19 rows only; its normal / pneumonia /
    other rows are set aside (counted, with the reason) and form the external set cohen_non_covid,
    none of whose images or patients is in a training manifest."""
    from cxrlib.data.adapters import build_manifest
    from cxrlib.data.taxonomy import task_classes
    from cxrlib.report.config import load_experiment
    from cxrlib.report.runner import EXPERIMENTS_DIR
    from cxrlib.validation.stage import external_collections, training_rows

    cohen_dir = shared_data / "covid-chestxray-dataset"
    if not cohen_dir.is_dir():
        pytest.skip(f"{cohen_dir} not found")
    cfg = load_experiment(EXPERIMENTS_DIR / "paper_a_real.yaml", smoke=True)
    cfg["strategies"] = {"scratch": cfg["strategies"]["scratch"]}  # no source part: seconds, not minutes
    info = prepare_data(cfg, tmp_path, tmp_path, data_root=shared_data)
    target = read_manifest(info["target"])
    assert set(target.loc[target["source"].str.contains("covid"), "label"]) == {"covid19"}
    # every non-COVID Cohen row is set aside with its reason, none silently dropped
    cohen = build_manifest("covid-chestxray", cohen_dir, task="paper_a").manifest
    non_covid = cohen[cohen["label"].isin(["normal", "pneumonia", "other_disease"])]
    aside = pd.read_csv(tmp_path / "set_aside.csv", keep_default_na=False)
    held = aside[aside["reason"].str.contains("not taken from this source")]
    assert len(non_covid) > 0 and len(held) == len(non_covid)
    assert sum(v for k, v in info["set_aside"].items() if "not taken from this source" in k) == len(non_covid)
    cfg["external"]["collections"] = [c for c in cfg["external"]["collections"] if c["name"] == "cohen_non_covid"]
    training = training_rows(info)
    sets, removed = external_collections(cfg, info["root"], training, task_classes("paper_a"))
    ext = sets["cohen_non_covid"]
    assert len(ext) > 0 and set(ext["label"]) <= {"normal", "pneumonia", "other_disease"}
    held_paths = set("covid-chestxray-dataset/" + non_covid["path"])
    assert set(ext["path"]) <= held_paths <= set(ext["path"]) | set(removed["path"])  # each kept or removed with a reason
    assert not set(ext["path"]) & set(training["path"])  # no image of the external set is trained on
    assert not set(ext["patient_id"].astype(str)) & set(training.loc[training["source"] == ext["source"].iloc[0],
                                                                      "patient_id"].astype(str))


@pytest.mark.shared_data
def test_source_labels_filter_is_multilabel_aware(shared_data, tmp_path: Path):
    from cxrlib.data.prepare import Entry, read_entries

    if not (shared_data / "nih-chestxray14-sample").is_dir():
        pytest.skip("NIH sample not found")
    every, _, _, _ = read_entries([Entry.from_mapping({"collection": "nih"})], "source", "nih14", shared_data, {})
    some, aside, _, _ = read_entries([Entry.from_mapping({"collection": "nih", "labels": ["Pneumonia", "Edema"]})],
                                     "source", "nih14", shared_data, {})
    # a multi-label row is kept when any of its findings is listed; every other row is set aside, counted
    assert len(some) and all({"Pneumonia", "Edema"} & set(v.split("|")) for v in some["findings"])
    held = aside[aside["reason"].str.contains("not taken from this source")]
    assert len(some) + len(held) == len(every) and not set(some["path"]) & set(held["file"])
    with pytest.raises(ValueError, match="Pneumonai"):  # a typo is named before any work
        read_entries([Entry.from_mapping({"collection": "nih", "labels": ["Pneumonai"]})], "source", "nih14",
                     shared_data, {})

"""Stage runners end to end on a tiny synthetic image set (32 px, 1 epoch), and a patient-
grouped 5-fold run of paper A's 4-class task on the real sample data (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib import experiment, models
from cxrlib.data.manifest import ManifestError
from cxrlib.data.manifest import write_manifest
from cxrlib.data.taxonomy import NIH_FINDINGS

TRAIN = {"epochs": 1, "verbose": 0, "tensorboard": False, "early_stopping": 0, "lr_schedule": None}
COMMON = {"backbone": "compact_densenet", "image_size": 32, "batch_size": 8, "bootstrap": 50, "train": TRAIN}


def _image(rng, bright_box: int) -> Image.Image:
    a = rng.integers(0, 120, size=(40, 40)).astype(np.uint8)
    if bright_box >= 0:  # a class-dependent bright square
        r, c = divmod(bright_box, 3)
        a[r * 12:r * 12 + 12, c * 12:c * 12 + 12] = 230
    return Image.fromarray(a, mode="L")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """root with a source (multi-label NIH findings) and a target (paper_b) manifest."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    src, tgt = [], []
    findings = ["No Finding", "Pneumonia", "Effusion|Pneumonia", "Cardiomegaly"]
    for i in range(40):
        f = findings[i % 4]
        path = f"img/s{i}.png"
        _image(rng, 1 if "Pneumonia" in f else (4 if f == "Cardiomegaly" else -1)).save(root / path)
        src.append({"path": path, "patient_id": f"sp{i // 2}", "source": "nih", "view": "PA",
                    "findings": f, "label": ""})
    labels = ["normal", "pneumonia", "covid19"]
    for i in range(48):
        lab = labels[i % 3]
        path = f"img/t{i}.png"
        _image(rng, {"normal": -1, "pneumonia": 1, "covid19": 7}[lab]).save(root / path)
        tgt.append({"path": path, "patient_id": f"tp{i // 2}", "source": "tiny", "view": "PA",
                    "findings": "", "label": lab})
    write_manifest(pd.DataFrame(src), root / "source.csv")
    write_manifest(pd.DataFrame(tgt), root / "target.csv")
    return root


def test_source_then_twice_with_neuron_keeping(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_NO_DOWNLOAD", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setitem(experiment.STAGE_DEFAULTS, "backbone", "compact_densenet")
    src_dir = tmp_path / "source"
    # compact_densenet has no ImageNet weights: with imagenet_fallback the first step of 'twice'
    # starts from scratch (without it the stage fails first: test_imagenet_without_weights_fails_first)
    m = experiment.run_source_stage(tiny / "source.csv", src_dir, source_task="nih14", init="imagenet",
                                    imagenet_fallback=True, **COMMON)
    assert m["init"]["init"] == "scratch (imagenet unavailable)"
    assert "macro_auroc" in m["test"] and set(m["test"]["per_class"]) == set(NIH_FINDINGS)
    for name in ("model.h5", "history.csv", "config.json", "metrics.json", "predictions.csv"):
        assert (src_dir / name).is_file(), name
    cfg = json.loads((src_dir / "config.json").read_text())
    assert cfg["classes"] == list(NIH_FINDINGS) and cfg["multi_label"] and cfg["status"] == "done"
    assert cfg["init"]["imagenet_weights"].startswith("unavailable")

    tgt_dir = tmp_path / "twice_onk"
    t = experiment.run_target_stage("twice", tiny / "target.csv", tgt_dir, source_dir=src_dir,
                                    keep_neurons="default", task="paper_b", **COMMON)
    assert t["init"]["kept_neurons"][0]["source"] == "Pneumonia"
    assert t["init"]["kept_neurons"][0]["target"] == "pneumonia"
    assert t["n"]["train"] + t["n"]["val"] + t["n"]["test"] == 48
    preds = pd.read_csv(tgt_dir / "predictions.csv", keep_default_na=False)
    assert list(preds.columns) == ["path", "patient_id", "label", "prob_normal", "prob_pneumonia",
                                   "prob_covid19", "pred"]
    assert np.allclose(preds.filter(like="prob_").sum(axis=1), 1, atol=1e-5)
    hist = pd.read_csv(tgt_dir / "history.csv")
    assert {"val_macro_f1", "val_recall_covid19"} <= set(hist.columns) and len(hist) == 1
    assert 0 <= t["test_ci"]["accuracy"]["low"] <= t["test_ci"]["accuracy"]["high"] <= 1
    # patients never cross train/val/test
    cfg_t = json.loads((tgt_dir / "config.json").read_text())
    assert cfg_t["split"].startswith("holdout_split")

    # resume: the same config returns stored metrics without retraining
    mtime = (tgt_dir / "model.h5").stat().st_mtime_ns
    again = experiment.run_target_stage("twice", tiny / "target.csv", tgt_dir, source_dir=src_dir,
                                        keep_neurons="default", task="paper_b", **COMMON)
    assert again == t and (tgt_dir / "model.h5").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="different config"):
        experiment.run_target_stage("twice", tiny / "target.csv", tgt_dir, source_dir=src_dir,
                                    task="paper_b", **COMMON)
    model, _, _ = experiment.load_stage(tgt_dir)
    assert models.last_conv_layer_name(model) == "relu"


def test_cross_validate(tiny, tmp_path):
    cfg = {**COMMON, "backbone": "plain_cnn", "task": "paper_b", "manifest": str(tiny / "target.csv")}
    summary = experiment.cross_validate(cfg, tmp_path, k=2)
    s = summary.set_index("metric")
    assert s.loc["accuracy", "n"] == 2 and np.isfinite(s.loc["accuracy", "std"])
    wide = pd.read_csv(tmp_path / "cv_metrics.csv")
    assert s.loc["accuracy", "mean"] == pytest.approx(wide["accuracy"].mean())
    folds = pd.read_csv(tmp_path / "folds_manifest.csv", keep_default_na=False)
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()  # patient-grouped folds
    allp = pd.read_csv(tmp_path / "predictions_all.csv", keep_default_na=False)
    assert sorted(allp["path"]) == sorted(folds["path"])  # every image tested exactly once
    for f in (0, 1):  # the test fold never served for early stopping / checkpoint selection
        val = pd.read_csv(tmp_path / f"fold{f}" / "predictions_val.csv", keep_default_na=False)
        test = pd.read_csv(tmp_path / f"fold{f}" / "predictions.csv", keep_default_na=False)
        assert not set(val["patient_id"]) & set(test["patient_id"])


def _fake_cv_dir(d, correct, curve):
    """A finished k-fold directory with given per-image correctness (for compare_strategies)."""
    d.mkdir()
    labels = ["normal", "covid19"] * 10
    pred = [lab if ok else ("covid19" if lab == "normal" else "normal") for lab, ok in zip(labels, correct)]
    pd.DataFrame({"path": [f"{i}.png" for i in range(20)], "patient_id": "p", "label": labels,
                  "prob_normal": 0.5, "prob_covid19": 0.5, "pred": pred, "fold": [i % 2 for i in range(20)]}
                 ).to_csv(d / "predictions_all.csv", index=False)
    pd.DataFrame({"epoch": [1, 2, 1, 2], "fold": [0, 0, 1, 1], "val_macro_f1": curve}).to_csv(
        d / "history_all.csv", index=False)
    pd.DataFrame({"fold": [0, 1], "accuracy": [np.mean(correct[0::2]), np.mean(correct[1::2])]}).to_csv(
        d / "cv_metrics.csv", index=False)


def test_compare_strategies_mcnemar_and_curves(tmp_path):
    a = [True] * 18 + [False] * 2
    b = [False] * 9 + [True] * 9 + [False] * 2  # 9 images only A gets right, none only B
    _fake_cv_dir(tmp_path / "a", a, [0.2, 0.4, 0.3, 0.5])
    _fake_cv_dir(tmp_path / "b", b, [0.1, 0.2, 0.1, 0.3])
    res = experiment.compare_strategies({"a": tmp_path / "a", "b": tmp_path / "b"}, tmp_path / "cmp")
    r = res["mcnemar"].iloc[0]
    assert (r["a_only_correct"], r["b_only_correct"], r["n"]) == (9, 0, 20)
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 9)
    comp = res["comparison"].set_index(["strategy", "metric"])
    assert comp.loc[("a", "accuracy"), "mean"] == pytest.approx(0.9)
    assert (tmp_path / "cmp" / "learning_curves.png").is_file()
    assert set(pd.read_csv(tmp_path / "cmp" / "learning_curves.csv")["strategy"]) == {"a", "b"}


def test_config_errors_are_clear(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown stage option"):
        experiment.run_stage({"manifest": str(tiny / "target.csv"), "epochs": 3}, tmp_path)
    with pytest.raises(ValueError, match="needs a complete 'fold' column"):
        experiment.run_stage({**COMMON, "manifest": str(tiny / "target.csv"), "task": "paper_b", "fold": 1},
                             tmp_path)
    with pytest.raises(ValueError, match="needs source_dir"):
        experiment.run_stage({**COMMON, "manifest": str(tiny / "target.csv"), "task": "paper_b",
                              "strategy": "twice"}, tmp_path)


def test_prepare_frame_grouping_subsample_and_exclusions(tiny):
    cfg = experiment.resolve_config(manifest=str(tiny / "source.csv"), task="normal_disease", max_images=20)
    df, excluded = experiment.prepare_frame(cfg)
    assert len(df) == 20 and set(df["label"]) == {"normal", "disease"}
    assert (df["label"] == "normal").sum() == 5  # stratified: 10 of 40 are 'No Finding'
    assert excluded == [{"reason": "subsampled to max_images=20 (class-stratified)", "n": 20}]
    cfg = experiment.resolve_config(manifest=str(tiny / "target.csv"), task="paper_b",
                                    exclude_patients_of=str(tiny / "target.csv"))
    with pytest.raises(ValueError, match="no rows left"):
        experiment.prepare_frame(cfg)
    with pytest.raises(ValueError, match="needs 'task'"):
        experiment.resolve_config(manifest=str(tiny / "target.csv"))


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_paper_a_patient_grouped_5fold(shared_data, tmp_path):
    """Paper A's 4 classes (Cohen + Figure 1 COVID-19; NIH normal/pneumonia/other) at 32 px, 1 epoch,
    subsampled: the pipeline completes and writes mean ± std over 5 patient-grouped folds."""
    from pathlib import Path

    manifest = Path(__file__).resolve().parents[1] / "data_manifests" / "paper_a.csv"
    if not manifest.is_file():
        pytest.skip(f"{manifest} not built (cxr data build-manifests)")
    # plain_cnn: the same code path as compact_densenet at a fraction of the graph-building time
    cfg = {**COMMON, "task": "paper_a", "manifest": str(manifest), "root": str(shared_data),
           "backbone": "plain_cnn", "max_images": 160, "bootstrap": 0}
    summary = experiment.cross_validate(cfg, tmp_path, k=5).set_index("metric")
    assert summary.loc["accuracy", "n"] == 5
    assert 0 <= summary.loc["accuracy", "mean"] <= 1 and summary.loc["accuracy", "std"] >= 0
    saved = json.loads((tmp_path / "cv_summary.json").read_text())
    assert saved["k"] == 5 and set(saved["summary"]["macro_f1"]) == {"mean", "std", "n"}
    preds = pd.read_csv(tmp_path / "predictions_all.csv", keep_default_na=False)
    folds_of_patient = preds.groupby("patient_id")["fold"].nunique()
    assert (folds_of_patient == 1).all()  # no patient in two test folds
    assert set(preds["label"]) == {"normal", "pneumonia", "other_disease", "covid19"}


def test_oversample_balances_classes():
    df = pd.DataFrame({"path": [f"{i}.png" for i in range(7)], "label": ["a"] * 5 + ["b"] * 2})
    out = experiment.oversample(df, seed=0)
    assert out["label"].value_counts().to_dict() == {"a": 5, "b": 5}
    assert set(out["path"]) == set(df["path"])  # only repeats, nothing new, nothing lost
    pd.testing.assert_frame_equal(out, experiment.oversample(df, seed=0))


def test_imagenet_without_weights_fails_first_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_NO_DOWNLOAD", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    missing = tmp_path / "not_read.csv"  # never read: the check comes before any data
    with pytest.raises(models.ImageNetWeightsUnavailable, match=r"keras.models.densenet121_weights"):
        experiment.run_source_stage(missing, tmp_path / "src", source_task="nih14", init="imagenet",
                                    backbone="densenet121")
    assert not (tmp_path / "src" / "config.json").exists()
    with pytest.raises(ManifestError, match="not_read.csv"):  # with the fallback it goes on (to the data)
        experiment.run_source_stage(missing, tmp_path / "src2", source_task="nih14", init="imagenet",
                                    backbone="densenet121", imagenet_fallback=True)


def test_source_stage_from_a_chexnet_style_checkpoint(tiny, tmp_path):
    """``source: {init: "checkpoint:PATH"}``: the imported DenseNet is the start (recorded), and
    the multi-label stage trains with CheXNet's weighted BCE (weights recorded in config.json)."""
    ckpt = Path(__file__).parent / "weights" / "fixtures" / "densenet_tiny_rgb14.pt"
    src_dir = tmp_path / "source"
    m = experiment.run_source_stage(tiny / "source.csv", src_dir, source_task="nih14",
                                    init=f"checkpoint:{ckpt}", **{**COMMON, "backbone": "densenet121"})
    assert m["init"]["strategy"] == "checkpoint" and m["init"]["init"] == f"checkpoint:{ckpt}"
    cfg = json.loads((src_dir / "config.json").read_text())
    assert cfg["config"]["init_checkpoint"] == f"checkpoint:{ckpt}"
    assert cfg["loss"]["name"] == "weighted_bce" and cfg["loss"]["classes"] == list(NIH_FINDINGS)
    # w_pos = N_neg / N per finding, from the training rows
    assert all(abs(p + n - 1) < 1e-6 for p, n in zip(cfg["loss"]["pos_weight"], cfg["loss"]["neg_weight"]))
    with pytest.raises(ValueError, match="source init"):
        experiment.run_source_stage(tiny / "source.csv", tmp_path / "bad", init="chexnet", **COMMON)

"""External validation: tables checked against direct computation (scikit-learn), overlap removal."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

from cxrlib.report.locate import packaged_experiments_dir
from cxrlib.validation import metrics as M
from cxrlib.validation.collections import remove_training_overlap

CLASSES = ["normal", "pneumonia", "other_disease", "covid19"]


def _random(n=120, seed=0, held=(0, 1, 3)):
    rng = np.random.default_rng(seed)
    t = rng.choice(held, size=n)
    prob = rng.dirichlet(np.ones(len(CLASSES)), size=n)
    prob[np.arange(n), t] += rng.uniform(0, 0.6, n)  # better than chance, not perfect
    return [CLASSES[i] for i in t], prob / prob.sum(1, keepdims=True), t


def test_tables_match_sklearn():
    labels, prob, t = _random()
    p = prob.argmax(1)
    pc = M.per_class_table(labels, prob, CLASSES, n_boot=200).set_index("class")
    rec = recall_score(t, p, labels=range(4), average=None, zero_division=0)
    cm = confusion_matrix(t, p, labels=range(4))
    for k, c in enumerate(CLASSES):
        if (t == k).any():
            assert pc.loc[c, "recall"] == pytest.approx(rec[k])
            assert pc.loc[c, "recall_low"] <= pc.loc[c, "recall"] <= pc.loc[c, "recall_high"]
        else:  # the collection holds no other_disease: undefined, said so, not dropped
            assert math.isnan(pc.loc[c, "recall"]) and "no other_disease" in pc.loc[c, "note"]
        tn = cm.sum() - cm[k].sum() - cm[:, k].sum() + cm[k, k]
        assert pc.loc[c, "specificity"] == pytest.approx(tn / (cm.sum() - cm[k].sum()))
    s = M.collection_summary(labels, prob, CLASSES, n_boot=200)
    assert s["accuracy"] == pytest.approx(accuracy_score(t, p))
    assert s["accuracy_low"] < s["accuracy"] < s["accuracy_high"]
    assert s["normal_specificity"] == pytest.approx(rec[0]) and s["n_normal_specificity"] == (t == 0).sum()
    assert s["positive_specificity"] == pytest.approx(np.mean(p[t != 3] != 3))
    assert np.array_equal(M.confusion(labels, prob, CLASSES).to_numpy(), cm)
    pt = M.prediction_table(labels, prob, CLASSES).set_index("true")
    assert list(pt.index) == ["normal", "pneumonia", "covid19"]
    assert np.allclose(pt[[f"pred_{c}" for c in CLASSES]].to_numpy(), cm[[0, 1, 3]] / cm[[0, 1, 3]].sum(1, keepdims=True))
    with pytest.raises(ValueError, match="not model classes"):
        M.per_class_table(["normal", "cat"], prob[:2], CLASSES)


def test_gaps_and_warnings_cross_thresholds():
    # a source detector: everything external is called covid19 (issue 10's pediatric probe)
    labels = ["normal"] * 18 + ["pneumonia"] * 3
    prob = np.tile(np.eye(4)[3], (21, 1))
    summ = pd.DataFrame([{"model": "m", "collection": "ext", **M.collection_summary(labels, prob, CLASSES, n_boot=0)}])
    pc = M.per_class_table(labels, prob, CLASSES, n_boot=0).assign(model="m", collection="ext")
    internal = {"m": M.internal_metrics({"test": {"accuracy": 0.8, "per_class": {"normal": {"recall": 0.7},
                                                                                "pneumonia": {"recall": 0.6}}}})}
    gaps = M.gap_table(internal, summ.drop(columns=["predicted"]), pc)
    g = gaps.set_index("metric")
    assert g.loc["accuracy", "gap"] == pytest.approx(0.8) and g.loc["recall_normal", "gap"] == pytest.approx(0.7)
    assert "recall_covid19" not in g.index  # the collection holds no covid19: nothing to compare
    kinds = {w["kind"] for w in M.external_warnings(summ, gaps)}
    assert {"normal_specificity", "positive_specificity", "gap:accuracy", "gap:recall_normal"} <= kinds
    assert "too_few" in kinds  # pneumonia recall rests on 3 images: reported, not judged
    lenient = M.Thresholds(min_normal_specificity=0.0, min_positive_specificity=0.0, max_gap=1.0)
    assert M.external_warnings(summ, gaps, lenient) == []
    with pytest.raises(ValueError, match="unknown key"):
        M.Thresholds.from_config({"max_gapp": 0.1})


def _img(path, seed, size=48):
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((8, 8)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).resize((size, size), Image.BILINEAR).save(path)


def test_overlap_with_training_is_removed_and_reported(tmp_path):
    from PIL import Image

    for i in range(3):
        _img(tmp_path / f"train/{i}.png", i)
    row = dict(view="PA", findings="x", label="normal")
    train = pd.DataFrame([dict(path=f"train/{i}.png", patient_id=f"p{i}", source="a", **row) for i in range(3)])
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext/copy.png").write_bytes((tmp_path / "train/0.png").read_bytes())  # exact copy
    Image.open(tmp_path / "train/1.png").resize((64, 64)).save(tmp_path / "ext/near.jpg", quality=95)  # re-encoded
    _img(tmp_path / "ext/same_patient.png", 10)
    _img(tmp_path / "ext/new.png", 11)
    _img(tmp_path / "ext/new_dup.png", 11)
    _img(tmp_path / "ext/other.png", 12)
    ext = pd.DataFrame([
        dict(path="ext/copy.png", patient_id="q1", source="b", **row),
        dict(path="ext/near.jpg", patient_id="q2", source="b", **row),
        dict(path="ext/same_patient.png", patient_id="p2", source="a", **row),  # patient a:p2 trained on
        dict(path="ext/new.png", patient_id="q3", source="b", **row),
        dict(path="ext/new_dup.png", patient_id="q4", source="b", **row),
        dict(path="ext/other.png", patient_id="q5", source="b", **{**row, "label": ""}),
        dict(path="train/2.png", patient_id="q6", source="b", **row),
    ])
    kept, removed = remove_training_overlap(ext, train, tmp_path, CLASSES, collection="x")
    assert kept["path"].tolist() == ["ext/new.png"]
    why = dict(zip(removed["path"], removed["reason"]))
    assert why == {"ext/copy.png": "duplicates a training image", "ext/near.jpg": "duplicates a training image",
                   "ext/same_patient.png": "patient has images in the training data",
                   "ext/new_dup.png": "duplicate of another image of the collection",
                   "ext/other.png": "no label for the task", "train/2.png": "same file as a training image"}
    assert dict(zip(removed["path"], removed["duplicate_of"]))["ext/near.jpg"] == "train/1.png"
    assert len(kept) + len(removed) == len(ext)  # nothing silently dropped


@pytest.mark.slow
@pytest.mark.shared_data
def test_small_model_on_figure1_and_held_out_cohen_rows(shared_data, tmp_path):
    """Issue 10's "done when": train on NIH + Cohen COVID rows, evaluate on Figure 1 and on the Cohen
    non-COVID rows held out of training; the library's tables equal direct computation."""
    from cxrlib import experiment
    from cxrlib.data.manifest import write_manifest
    from cxrlib.data.pipeline import load_images
    from cxrlib.models import load_model
    from cxrlib.validation.collections import load_collection
    from cxrlib.validation.run import evaluate_external

    nih, _ = load_collection({"adapter": "nih", "root": "nih-chestxray14-sample"}, shared_data, "paper_a")
    cohen, _ = load_collection({"adapter": "covid-chestxray", "root": "covid-chestxray-dataset"}, shared_data,
                               "paper_a")
    nih = pd.concat([nih[nih["label"] == c].sample(n=25, random_state=0) for c in CLASSES[:3]])
    covid = cohen[cohen["label"] == "covid19"].sample(n=25, random_state=0)
    held_out = cohen[cohen["label"].isin(["normal", "pneumonia", "other_disease"])]  # never trained on
    train = pd.concat([nih, covid], ignore_index=True).drop(columns=["split", "fold"], errors="ignore")
    write_manifest(train, tmp_path / "train.csv")
    stage = tmp_path / "stage"
    experiment.run_stage({"task": "paper_a", "manifest": str(tmp_path / "train.csv"), "root": str(shared_data),
                          "image_size": 32, "bootstrap": 0, "test_fraction": 0.2,
                          "train": {"epochs": 1, "verbose": 0, "tensorboard": False}}, stage)
    fig1, _ = load_collection({"adapter": "figure1", "root": "figure1-covid-chestxray-dataset"}, shared_data,
                              "paper_a")
    kept, removed = {}, []
    for name, df in (("figure1", fig1), ("cohen_non_covid", held_out)):
        kept[name], rem = remove_training_overlap(df, train, shared_data, CLASSES, collection=name)
        assert len(kept[name]) + len(rem) == len(df)
        removed.append(rem)
    # the held-out Cohen rows share patients with trained COVID images only when a patient has both
    assert not set(kept["cohen_non_covid"]["patient_id"]) & set(train["patient_id"])
    res = evaluate_external({"m": stage}, kept, shared_data, n_boot=100)
    model = load_model(stage / "model.h5")
    for name, df in kept.items():
        x = load_images(df, shared_data, 32, channels=3, backbone="compact_densenet")
        p = model.predict(x, verbose=0).argmax(1)
        t = np.array([CLASSES.index(c) for c in df["label"]])
        row = res.summary.set_index("collection").loc[name]
        assert row["n"] == len(df) and row["accuracy"] == pytest.approx(accuracy_score(t, p))
        pc = res.per_class[res.per_class["collection"] == name].set_index("class")
        rec = recall_score(t, p, labels=range(4), average=None, zero_division=0)
        for k, c in enumerate(CLASSES):
            if (t == k).any():
                assert pc.loc[c, "recall"] == pytest.approx(rec[k])
        if (t == 0).any():
            assert row["normal_specificity"] == pytest.approx(np.mean(p[t == 0] == 0))
        cm = res.confusion[res.confusion["collection"] == name].pivot(index="true", columns="predicted",
                                                                       values="count")
        assert np.array_equal(cm.loc[CLASSES, CLASSES].to_numpy(), confusion_matrix(t, p, labels=range(4)))
    internal = res.gaps[(res.gaps["metric"] == "accuracy")]["internal"].iloc[0]
    assert internal == pytest.approx(experiment.load_stage(stage, model=False)[2]["test"]["accuracy"])


def test_external_config_block_is_validated_and_planned():
    from cxrlib.report.config import ConfigError, load_experiment, validate_external
    from cxrlib.report.plan import build_plan

    cfg = load_experiment(packaged_experiments_dir() / "paper_a_real.yaml", smoke=True)
    plan = {s.id: s for s in build_plan(cfg)}
    assert "07_external" in plan and "05_heatmaps" in plan["07_external"].depends
    names = [c["name"] for c in cfg["external"]["collections"]]
    assert "figure1" in names  # evaluated externally, so never trained on:
    assert all((a.get("collection") or a.get("adapter")) != "figure1" for a in cfg["data"]["target"]["adapters"])
    validate_external(None)
    for bad, key in (({"colections": []}, "colections"), ({"collections": [{"adapter": "nope", "root": "x"}]}, "nope"),
                     ({"collections": [{"adapter": "figure1"}]}, "'root'"),
                     ({"collections": [{"collection": "figure2"}]}, "figure2"),
                     ({"thresholds": {"max_gapp": 1}}, "max_gapp"), ({"bootstrap": "many"}, "bootstrap")):
        with pytest.raises(ConfigError, match=key):
            validate_external(bad, "x.yaml")


def test_index_shows_external_next_to_internal_with_warnings(tmp_path):
    from cxrlib.report.index import render_index
    from cxrlib.validation.run import ExternalResult
    from cxrlib.validation.stage import write_stage

    labels = ["normal"] * 18
    prob = np.tile(np.eye(4)[3], (18, 1))  # every external normal called covid19
    summ = pd.DataFrame([{"model": "scratch/fold0", "collection": "figure1",
                          **M.collection_summary(labels, prob, CLASSES, n_boot=0)}]).drop(columns=["predicted"])
    pc = M.per_class_table(labels, prob, CLASSES, n_boot=0).assign(model="scratch/fold0", collection="figure1")
    gaps = M.gap_table({"scratch/fold0": {"accuracy": 0.81, "recall_normal": 0.7}}, summ, pc)
    res = ExternalResult(summ, pc, M.prediction_table(labels, prob, CLASSES), gaps, pd.DataFrame(), pd.DataFrame(),
                         M.external_warnings(summ, gaps), M.Thresholds())
    verdict = pd.DataFrame([{"model": "scratch", "verdict": "effect without relevance", "evidence": "e"}])
    write_stage(tmp_path / "stages" / "07_external", res, {"warning": "STRONG confounding: 0.93 vs 0.75"}, verdict)
    page = render_index(tmp_path)
    assert 'id="external-headline"' in page and "0.81" in page and "0.00 (n=18)" in page
    assert "0% of 18 external normal images called normal" in page
    assert "STRONG confounding" in page and "effect without relevance" in page


def test_rate_ci_is_the_evaluation_bootstrap():
    from cxrlib.evaluation import bootstrap_ci

    hit = np.random.default_rng(1).random(57) < 0.6
    ci = bootstrap_ci(np.ones(57, int), np.eye(2)[hit.astype(int)], "accuracy", n_boot=300, seed=4)
    assert M._rate_ci(hit, 300, 4) == pytest.approx((ci["estimate"], ci["low"], ci["high"]))

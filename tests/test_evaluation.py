"""Evaluation metrics against scikit-learn / scipy on fixed arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn import metrics as skm

from cxrlib import evaluation
from cxrlib.comparison import aggregate_folds, plot_learning_curves
from cxrlib.io import write_json

CLASSES = ["normal", "pneumonia", "other_disease", "covid19"]
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3])
Y_PROB = np.array([
    [.7, .1, .1, .1], [.4, .3, .2, .1], [.2, .5, .2, .1],
    [.1, .6, .2, .1], [.2, .2, .5, .1], [.1, .7, .1, .1],
    [.1, .1, .6, .2], [.2, .1, .3, .4],
    [.1, .1, .1, .7], [.1, .2, .1, .6], [.1, .1, .6, .2], [.2, .1, .1, .6],
])


def test_classification_metrics_match_sklearn():
    m = evaluation.classification_metrics(np.eye(4)[Y_TRUE], Y_PROB, CLASSES)
    pred = Y_PROB.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(Y_TRUE, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(Y_TRUE, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(Y_TRUE, pred, average="weighted"))
    assert m["confusion_matrix"] == skm.confusion_matrix(Y_TRUE, pred).tolist()
    assert m["macro_auc_ovr"] == pytest.approx(skm.roc_auc_score(Y_TRUE, Y_PROB, multi_class="ovr"))
    p, r, f, s = skm.precision_recall_fscore_support(Y_TRUE, pred, zero_division=0)
    for k, c in enumerate(CLASSES):
        assert m["per_class"][c]["precision"] == pytest.approx(p[k])
        assert m["per_class"][c]["recall"] == pytest.approx(r[k])
        assert m["per_class"][c]["f1"] == pytest.approx(f[k])
        assert m["per_class"][c]["support"] == s[k]
    # COVID-19 one-vs-rest, by hand from the confusion matrix: 3 of 4 found; 1 of 8 others called covid
    assert m["sensitivity_covid19"] == pytest.approx(3 / 4)
    assert m["specificity_covid19"] == pytest.approx(7 / 8)
    assert m["undefined"] == {}
    tidy = evaluation.per_class_table(m)
    assert list(tidy["class"]) == CLASSES and {"precision", "recall", "f1", "support", "auc"} <= set(tidy.columns)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_absent_class_auc_is_nan_and_explained():
    keep = Y_TRUE != 2
    m = evaluation.classification_metrics(Y_TRUE[keep], Y_PROB[keep], CLASSES)
    assert math.isnan(m["per_class"]["other_disease"]["auc"])
    assert "auc_other_disease" in m["undefined"] and "macro_auc_ovr" in m["undefined"]


def test_multilabel_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.4).astype(int)
    y[:, 2] = 0  # a finding with no positive image
    prob = np.clip(y * 0.3 + rng.random((40, 3)) * 0.7, 0, 1)
    m = evaluation.multilabel_metrics(y, prob, ["A", "B", "C"])
    for k, c in enumerate("AB"):
        assert m["per_class"][c]["auc"] == pytest.approx(skm.roc_auc_score(y[:, k], prob[:, k]))
    assert math.isnan(m["per_class"]["C"]["auc"]) and m["undefined"]["auc_C"] == "no positive image"
    assert m["macro_auroc"] == pytest.approx(np.mean([skm.roc_auc_score(y[:, k], prob[:, k]) for k in (0, 1)]))


def test_epoch_metrics_loss_matches_keras():
    from tensorflow import keras

    y = np.eye(4, dtype=np.float32)[Y_TRUE]
    logs = evaluation.epoch_metrics(y, Y_PROB, CLASSES)
    keras_loss = float(keras.losses.CategoricalCrossentropy()(y, Y_PROB.astype(np.float32)))
    assert logs["val_loss"] == pytest.approx(keras_loss, rel=1e-5)
    assert logs["val_macro_f1"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PROB.argmax(1), average="macro"))
    assert logs["val_recall_covid19"] == pytest.approx(0.75)


def test_aggregate_folds_mean_and_sample_std():
    acc = [0.9, 0.91, 0.89, 0.905, 0.895]
    wide = pd.DataFrame({"fold": range(5), "accuracy": acc, "macro_f1": [0.8] * 5})
    s = aggregate_folds(wide).set_index("metric")
    assert s.loc["accuracy", "mean"] == pytest.approx(np.mean(acc))
    assert s.loc["accuracy", "std"] == pytest.approx(np.std(acc, ddof=1))
    assert s.loc["accuracy", "n"] == 5 and "fold" not in s.index
    assert s.loc["macro_f1", "text"] == "0.8000 ± 0.0000"


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    a = evaluation.bootstrap_ci(Y_TRUE, Y_PROB, "accuracy", n_boot=300, seed=3)
    b = evaluation.bootstrap_ci(Y_TRUE, Y_PROB, "accuracy", n_boot=300, seed=3)
    assert a == b
    assert a["low"] <= a["estimate"] <= a["high"] and a["low"] < a["high"]
    assert a["estimate"] == pytest.approx(skm.accuracy_score(Y_TRUE, Y_PROB.argmax(1)))


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_from_confusion_counts_equals_the_sklearn_loop(metric):
    """The vectorised resamples are the loop's resamples, and each statistic is sklearn's."""
    rng = np.random.default_rng(5)
    for n, k in ((40, 3), (7, 4), (1, 2)):  # small sets: resamples that miss whole classes
        t = rng.integers(0, k, n)
        prob = rng.random((n, k))
        fast = evaluation.bootstrap_ci(t, prob, metric, n_boot=200, seed=11)
        slow = evaluation.bootstrap_ci(t, prob, evaluation.METRIC_FUNCS[metric], n_boot=200, seed=11)
        for key in ("estimate", "low", "high"):
            assert fast[key] == pytest.approx(slow[key], abs=1e-12), (n, k, key)
        assert fast["metric"] == metric
    # per resample, not only the quantiles
    t, p = rng.integers(0, 3, 25), rng.integers(0, 3, 25)
    cm = evaluation._resampled_confusion(t, p, np.random.default_rng(2), 50)
    loop = np.random.default_rng(2)
    want = [evaluation.METRIC_FUNCS[metric](t[i], p[i]) for i in (loop.integers(0, 25, 25) for _ in range(50))]
    assert np.allclose(evaluation._FROM_CONFUSION[metric](cm), want, atol=1e-12)


def test_mcnemar_exact_binomial():
    t = np.zeros(30, int)
    pa = np.zeros(30, int)
    pb = np.zeros(30, int)
    pb[:8] = 1   # 8 images only A gets right
    pa[8:10] = 1  # 2 images only B gets right
    pa[10:12] = pb[10:12] = 1  # 2 both wrong
    r = evaluation.mcnemar(t, pa, pb)
    assert (r["a_only_correct"], r["b_only_correct"], r["both_wrong"], r["both_correct"]) == (8, 2, 2, 18)
    assert r["p_value"] == pytest.approx(binomtest(8, 10, 0.5).pvalue) == pytest.approx(0.109375)
    assert evaluation.mcnemar(t, pa, pa)["p_value"] == 1.0


def test_predictions_json_and_learning_curves(tmp_path):
    df = pd.DataFrame({"path": [f"i{k}.png" for k in range(12)], "patient_id": "p",
                       "label": [CLASSES[k] for k in Y_TRUE]})
    p = evaluation.predictions_frame(df, Y_PROB, CLASSES)
    assert list(p.columns) == ["path", "patient_id", "label"] + [f"prob_{c}" for c in CLASSES] + ["pred"]
    p.to_csv(tmp_path / "p.csv", index=False)
    back, classes = evaluation.read_predictions(tmp_path / "p.csv")
    assert classes == CLASSES and back["pred"].tolist() == [CLASSES[k] for k in Y_PROB.argmax(1)]
    write_json(tmp_path / "m.json", {"x": float("nan"), "y": np.float32(0.5), "z": np.arange(2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": None, "y": 0.5, "z": [0, 1]}
    hist = {s: pd.DataFrame({"epoch": [1, 2, 3], "val_macro_f1": v})
            for s, v in {"scratch": [.2, .3, .5], "twice": [.4, .5, .55]}.items()}
    plot_learning_curves(hist, "val_macro_f1", tmp_path / "lc.png")
    assert (tmp_path / "lc.png").stat().st_size > 1000
    with pytest.raises(KeyError, match="val_auc"):
        plot_learning_curves(hist, "val_auc")

"""CheXNet's weighted binary cross-entropy for the NIH 14-finding source stage (issue 8 item 6)."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow import keras

from cxrlib import losses, training

Y = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)


def test_weights_are_the_other_class_fraction():
    w = losses.bce_class_weights(Y, ["a", "b", "c"])
    assert w["positives"] == [2, 1, 0] and w["n"] == 4
    np.testing.assert_allclose(w["prevalence"], [0.5, 0.25, 0.0])
    np.testing.assert_allclose(w["pos_weight"], [0.5, 0.75, 1.0])  # N_neg / N
    np.testing.assert_allclose(w["neg_weight"], [0.5, 0.25, 0.0])  # N_pos / N
    assert w["no_positives"] == ["c"]
    # positives and negatives of each finding weigh the same in total: w_pos N_pos = w_neg N_neg
    pos, neg = Y.sum(0), (1 - Y).sum(0)
    np.testing.assert_allclose(np.array(w["pos_weight"]) * pos, np.array(w["neg_weight"]) * neg)


def test_weights_refuse_bad_shapes():
    with pytest.raises(ValueError, match="non-empty"):
        losses.bce_class_weights(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="2 class names for 3"):
        losses.bce_class_weights(Y, ["a", "b"])


def test_weighted_loss_matches_the_formula_and_plain_bce_with_unit_weights():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, size=Y.shape).astype(np.float32)
    w = losses.bce_class_weights(Y)
    got = float(losses.WeightedBinaryCrossentropy(w["pos_weight"], w["neg_weight"])(Y, p))
    wp, wn = np.array(w["pos_weight"]), np.array(w["neg_weight"])
    want = -np.mean(wp * Y * np.log(p) + wn * (1 - Y) * np.log(1 - p))
    assert got == pytest.approx(want, rel=1e-5)
    unit = float(losses.WeightedBinaryCrossentropy([1, 1, 1], [1, 1, 1])(Y, p))
    assert unit == pytest.approx(float(keras.losses.BinaryCrossentropy()(Y, p)), rel=1e-5)
    cfg = losses.WeightedBinaryCrossentropy(wp, wn).get_config()
    assert losses.WeightedBinaryCrossentropy.from_config(cfg).pos_weights == list(wp)


def test_loss_choice():
    assert losses.resolve_loss("auto", multi_label=True) == "weighted_bce"
    assert losses.resolve_loss("auto", multi_label=False) == "categorical_crossentropy"
    with pytest.raises(ValueError, match="multi-label"):
        losses.resolve_loss("weighted_bce", multi_label=False)
    with pytest.raises(ValueError, match="loss must be one of"):
        training.TrainConfig.from_dict({"loss": "focal"})
    assert training.TrainConfig.from_dict({"loss": "bce"}).to_dict()["loss"] == "bce"
    assert training.TrainConfig().loss == "auto"


def test_make_loss_records_its_weights():
    loss, info = losses.make_loss("bce", True)
    assert isinstance(loss, keras.losses.BinaryCrossentropy) and info == {"name": "bce"}
    given = losses.bce_class_weights(Y)
    loss, info = losses.make_loss("auto", True, weights=given)
    assert info["name"] == "weighted_bce" and info["pos_weight"] == given["pos_weight"]
    with pytest.raises(ValueError, match="training targets"):
        losses.make_loss("weighted_bce", True)


@pytest.mark.slow
def test_fit_trains_with_the_weighted_loss_by_default():
    name = "auto"
    from cxrlib.models import build_model

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(16, 32, 32, 1)).astype(np.float32)
    y = np.zeros((16, 3), np.float32)
    y[:4, 0] = 1
    y[:1, 1] = 1
    y[::2, 2] = 1
    result = training.fit(lambda: build_model("plain_cnn", (32, 32, 1), 3, "sigmoid"), (x, y), (x, y),
                          ["a", "b", "c"], {"epochs": 1, "loss": name, "tensorboard": False, "verbose": 0,
                                            "early_stopping": 0, "lr_schedule": None})
    assert result.loss["name"] == "weighted_bce"
    np.testing.assert_allclose(result.loss["pos_weight"], [12 / 16, 15 / 16, 8 / 16])
    assert isinstance(result.model.loss, losses.WeightedBinaryCrossentropy)


@pytest.mark.shared_data
def test_pneumonia_is_among_the_rarest_findings_in_the_full_nih_labels(shared_data):
    """The neuron output neuron keeping copies is the second rarest of the 14 (Hernia rarer)."""
    import pandas as pd

    from cxrlib.data.taxonomy import NIH_FINDINGS

    path = shared_data / "nih-chestxray14-labels-full" / "Data_Entry_2017_v2020.csv.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    findings = pd.read_csv(path, usecols=["Finding Labels"])["Finding Labels"].str.split("|")
    y = np.array([[c in f for c in NIH_FINDINGS] for f in findings], dtype=np.float32)
    w = losses.bce_class_weights(y, NIH_FINDINGS)
    assert w["n"] == 112120
    rarest = [c for _, c in sorted(zip(w["prevalence"], NIH_FINDINGS))]
    assert rarest[:2] == ["Hernia", "Pneumonia"]
    i = list(NIH_FINDINGS).index("Pneumonia")
    assert w["positives"][i] == 1431 and w["pos_weight"][i] > 0.98


def test_weights_from_manifest_findings_need_no_images():
    import pandas as pd

    df = pd.DataFrame({"findings": ["Pneumonia|Effusion", "No Finding", "Effusion", "Hernia"]})
    w = losses.bce_class_weights_from_manifest(df, ["Pneumonia", "Effusion", "Mass"])
    assert w["positives"] == [1, 2, 0] and w["no_positives"] == ["Mass"]
    np.testing.assert_allclose(w["pos_weight"], [0.75, 0.5, 1.0])

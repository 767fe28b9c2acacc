"""Tests for cxrlib.claims: the papers' claims as statistics on tidy tables (no training)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cxrlib import claims


def _metrics(values: dict[str, list[float]], metric: str = "accuracy") -> pd.DataFrame:
    return pd.DataFrame([{"strategy": s, "fold": f, "metric": metric, "value": v}
                         for s, vals in values.items() for f, v in enumerate(vals)])


def _histories(curves: dict[str, list[list[float]]], col: str = "val_macro_f1") -> pd.DataFrame:
    """{strategy: [curve of fold 0, curve of fold 1, ...]} -> stacked history rows (epochs from 1)."""
    return pd.DataFrame([{"strategy": s, "fold": f, "epoch": e + 1, col: v}
                         for s, folds in curves.items() for f, curve in enumerate(folds)
                         for e, v in enumerate(curve)])


def test_paired_folds_consistent_gain_is_significant_and_signed():
    scratch = [0.50, 0.55, 0.48, 0.60, 0.52]
    detl = [v + d for v, d in zip(scratch, [0.10, 0.12, 0.08, 0.11, 0.09])]
    r = claims.paired_folds(_metrics({"scratch": scratch, "domain_extension": detl}), "domain_extension", "scratch")
    row = r.iloc[0]
    assert row["n_folds"] == 5 and row["wins"] == "5/5"
    assert row["difference"] == pytest.approx(0.10)
    assert row["spread"] == pytest.approx(np.std([0.10, 0.12, 0.08, 0.11, 0.09], ddof=1))
    assert row["p_value"] < 0.001 and row["direction"].startswith("a > b (p < 0.05")
    # exact Wilcoxon: with 5 folds the smallest two-sided p is 2 / 2**5
    assert row["p_wilcoxon"] == pytest.approx(0.0625)
    back = claims.paired_folds(_metrics({"scratch": scratch, "domain_extension": detl}), "scratch",
                               "domain_extension").iloc[0]
    assert back["difference"] == pytest.approx(-0.10) and back["direction"].startswith("a < b")


def test_paired_folds_noise_is_not_significant():
    a = [0.50, 0.62, 0.48, 0.60, 0.52]
    b = [0.55, 0.57, 0.50, 0.56, 0.51]
    row = claims.paired_folds(_metrics({"a": a, "b": b}), "a", "b").iloc[0]
    assert row["p_value"] > 0.05 and "not significant" in row["direction"]


def test_paired_folds_names_missing_strategy_and_metric():
    m = _metrics({"a": [0.5, 0.6], "b": [0.4, 0.5]})
    with pytest.raises(ValueError, match="no rows for strategy \\['twice'\\]"):
        claims.paired_folds(m, "twice", "b")
    with pytest.raises(ValueError, match="no metric 'macro_f1'"):
        claims.paired_folds(m, "a", "b", metric="macro_f1")


def test_early_area_is_the_mean_height_of_the_first_epochs():
    h = _histories({"twice": [[0.2, 0.4, 0.6, 0.9, 0.9]], "imagenet": [[0.1]]})
    areas = claims.early_area(h, epochs=3).set_index("strategy")
    assert areas.loc["twice", "area"] == pytest.approx((0.3 + 0.5) / 2)  # trapezoids over epochs 1..3
    assert areas.loc["twice", "epochs"] == 3
    assert areas.loc["imagenet", "area"] == pytest.approx(0.1) and areas.loc["imagenet", "epochs"] == 1
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        claims.early_area(h, epochs=0)


def test_early_advantage_over_folds_has_spread_and_one_split_says_why_not():
    twice = [[0.40, 0.50, 0.60], [0.45, 0.50, 0.62], [0.38, 0.52, 0.58]]
    imagenet = [[0.20, 0.30, 0.50], [0.25, 0.28, 0.55], [0.18, 0.35, 0.52]]
    row = claims.early_advantage(_histories({"twice": twice, "imagenet": imagenet}), "twice", "imagenet",
                                 epochs=2).iloc[0]
    expected = [np.mean(t[:2]) - np.mean(i[:2]) for t, i in zip(twice, imagenet)]
    assert row["difference"] == pytest.approx(np.mean(expected))
    assert row["spread"] == pytest.approx(np.std(expected, ddof=1)) and row["p_value"] < 0.05
    one = claims.early_advantage(_histories({"twice": twice[:1], "imagenet": imagenet[:1]}), "twice",
                                 "imagenet", epochs=2).iloc[0]
    assert math.isnan(one["spread"]) and math.isnan(one["p_value"]) and "one split" in one["note"]


def test_kept_class_advantage_reports_a_negative_effect_as_found():
    col = "val_recall_pneumonia"
    h = _histories({"twice_onk": [[0.1, 0.3], [0.2, 0.3]], "twice": [[0.5, 0.6], [0.4, 0.7]]}, col=col)
    row = claims.kept_class_advantage(h, "twice_onk", "twice", "pneumonia", epochs=2).iloc[0]
    assert row["difference"] < 0 and "kept class 'pneumonia'" in row["statistic"]
    with pytest.raises(ValueError, match="val_recall_covid19"):
        claims.kept_class_advantage(h, "twice_onk", "twice", "covid19")


def test_claims_table_supported_only_with_sign_and_p():
    m = _metrics({"scratch": [0.5, 0.55, 0.48, 0.6, 0.52], "domain_extension": [0.61, 0.66, 0.57, 0.7, 0.62]})
    h = _histories({"twice_onk": [[0.1, 0.2]] * 5, "twice": [[0.3, 0.4]] * 5}, col="val_recall_pneumonia")
    specs = [
        {"claim": "DETL beats scratch", "paper": "A", "kind": "paired_folds", "a": "domain_extension", "b": "scratch"},
        {"claim": "scratch beats DETL", "kind": "paired_folds", "a": "scratch", "b": "domain_extension"},
        {"claim": "ONK", "kind": "kept_class_advantage", "a": "twice_onk", "b": "twice", "expect": "any"},
    ]
    t = claims.claims_table(m, h, specs)
    assert list(t.columns[:len(claims.CLAIM_COLUMNS)]) == claims.CLAIM_COLUMNS
    assert t["supported"].tolist() == [True, False, None]
    assert t.loc[2, "difference"] == pytest.approx(-0.2)
    with pytest.raises(ValueError, match=r"claims_tests\[0\] \(x\): .*'nope'"):
        claims.claims_table(m, h, [{"claim": "x", "kind": "paired_folds", "a": "nope", "b": "scratch"}])
    with pytest.raises(ValueError, match="kind must be one of"):
        claims.claims_table(m, h, [{"kind": "t_test", "a": "a", "b": "b"}])


def test_claims_markdown_one_row_per_claim_with_verdict():
    m = _metrics({"scratch": [0.5, 0.55, 0.48, 0.6, 0.52], "domain_extension": [0.61, 0.66, 0.57, 0.7, 0.62]})
    t = claims.claims_table(m, pd.DataFrame(), [{"claim": "DETL beats scratch", "kind": "paired_folds",
                                                 "a": "domain_extension", "b": "scratch"}])
    md = claims.claims_markdown(t).splitlines()
    assert len(md) == 3 and "DETL beats scratch" in md[2] and "**supported**" in md[2]
    assert "+0.102 ±" in md[2] and "5/5 folds" in md[2]

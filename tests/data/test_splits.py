"""Patient-grouped, stratified splits and the leakage check."""

import numpy as np
import pandas as pd
import pytest

from cxrlib.data.manifest import new_manifest
from cxrlib.data.splits import LeakageError, assert_no_leakage, check_leakage, holdout_split, kfold_split


def _manifest(n_patients=120, seed=0):
    """Patients with 1-4 images, classes imbalanced 50/30/20 %; two sources share patient ids."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = rng.choice(["normal", "pneumonia", "covid19"], p=[0.5, 0.3, 0.2])
        source = "a" if p % 2 else "b"
        for j in range(rng.integers(1, 5)):
            rows.append(dict(path=f"{source}/{p}_{j}.png", patient_id=str(p // 2), source=source, view="PA",
                             findings=label, label=label))
    return new_manifest(rows)


def _groups(df):
    return df["source"] + "/" + df["patient_id"]


def test_kfold_no_patient_crosses_folds_and_is_stratified():
    df = _manifest()
    out = kfold_split(df, k=5, seed=1)
    assert out.groupby(_groups(out))["fold"].nunique().max() == 1
    assert sorted(out["fold"].unique()) == ["0", "1", "2", "3", "4"]
    overall = df["label"].value_counts(normalize=True)
    for _, part in out.groupby("fold"):
        share = part["label"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (share - overall).abs().max() < 0.12, share
    assert check_leakage(out) == []


def test_same_patient_id_in_two_sources_is_two_groups():
    df = _manifest()
    out = kfold_split(df, k=5, seed=1)
    crossing = out.groupby("patient_id")["fold"].nunique()
    assert (crossing > 1).any()  # ids repeat across sources, groups are (source, patient_id)


def test_splits_are_deterministic_and_row_order_independent():
    df = _manifest()
    a = kfold_split(df, 5, seed=3)
    b = kfold_split(df.sample(frac=1, random_state=7), 5, seed=3).loc[df.index]
    assert (a["fold"] == b["fold"]).all()
    c = kfold_split(df, 5, seed=4)
    assert (a["fold"] != c["fold"]).any()  # the seed matters
    h1 = holdout_split(df, 0.2, 0.1, seed=3)
    h2 = holdout_split(df.iloc[::-1], 0.2, 0.1, seed=3).loc[df.index]
    assert (h1["split"] == h2["split"]).all()


def test_holdout_fractions_grouping_and_existing_test():
    df = _manifest(200)
    out = holdout_split(df, test_size=0.2, val_size=0.1, seed=0)
    frac = out["split"].value_counts(normalize=True)
    assert abs(frac["test"] - 0.2) < 0.05 and abs(frac["val"] - 0.1) < 0.05
    assert out.groupby(_groups(out))["split"].nunique().max() == 1
    official = df.copy()
    official["split"] = np.where(df["source"] == "a", "test", "")
    kept = holdout_split(official, 0.2, 0.1, seed=0)
    assert (kept.loc[df["source"] == "a", "split"] == "test").all()
    assert set(kept.loc[df["source"] == "b", "split"]) == {"train", "val"}
    with pytest.raises(ValueError, match="sum below 1"):
        holdout_split(df, 0.6, 0.5)


def test_multilabel_rows_are_stratified_by_findings():
    rows = [dict(path=f"{i}.png", patient_id=str(i), source="nih", view="PA", label="",
                 findings="Hernia" if i % 10 == 0 else "No Finding") for i in range(100)]
    out = kfold_split(new_manifest(rows), 5, seed=0)
    assert (out[out["findings"] == "Hernia"]["fold"].value_counts() == 2).all()


def test_leakage_check_names_patients_and_duplicate_images():
    df = holdout_split(_manifest(), 0.2, 0.1, seed=0)
    multi = df.groupby(_groups(df)).filter(lambda g: len(g) > 1)
    victim = multi.index[0]
    pid, source = df.at[victim, "patient_id"], df.at[victim, "source"]
    other = "test" if df.at[victim, "split"] != "test" else "train"
    df.loc[victim, "split"] = other
    problems = check_leakage(df)
    assert len(problems) == 1
    assert f"patient {pid} (source {source})" in problems[0].message and other in problems[0].message
    assert f"line {victim + 2}" in problems[0].message or f"lines {victim + 2}" in problems[0].message
    with pytest.raises(LeakageError, match=f"patient {pid}"):
        assert_no_leakage(df)

    clean = holdout_split(_manifest(), 0.2, 0.1, seed=0)
    a = clean.index[clean["split"] == "train"][0]
    b = clean.index[clean["split"] == "test"][0]
    pairs = pd.DataFrame([dict(path_a=clean.at[a, "path"], path_b=clean.at[b, "path"], kind="near")])
    msgs = [p.message for p in check_leakage(clean, pairs)]
    assert len(msgs) == 1 and clean.at[a, "path"] in msgs[0] and clean.at[b, "path"] in msgs[0]
    clean["sha1"] = ""
    clean.loc[[a, b], "sha1"] = "f" * 40
    assert any("identical image file" in p.message for p in check_leakage(clean))


def test_too_few_patients_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot fill 5 folds"):
        kfold_split(_manifest(3), 5)


def test_real_nih_sample_splits_without_leakage(nih_root):
    from cxrlib.data.adapters import nih

    m = nih.build_manifest(nih_root, task="paper_a").manifest
    out = holdout_split(kfold_split(m, 5, seed=0), 0.2, 0.1, seed=0)
    assert check_leakage(out) == []
    assert out.groupby("patient_id")["split"].nunique().max() == 1

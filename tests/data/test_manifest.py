import pandas as pd
import pytest

from cxrlib.data.manifest import (
    ManifestError, check_manifest, new_manifest, read_manifest, validate_manifest, write_manifest,
)
from cxrlib.data.taxonomy import NIH_FINDINGS, normalize_task, task_classes


def _df(**over):
    rows = [
        dict(path="a.png", patient_id="p1", source="s", view="PA", findings="No Finding", label="normal"),
        dict(path="b.png", patient_id="p2", source="s", view="AP", findings="Pneumonia", label="pneumonia"),
    ]
    for k, v in over.items():
        rows[1][k] = v
    return new_manifest(rows)


def test_valid_manifest_has_no_problems(tmp_path):
    for n in ("a.png", "b.png"):
        (tmp_path / n).write_bytes(b"x")
    assert validate_manifest(_df(), root=tmp_path, classes=task_classes("paper_a")) == []


def test_unknown_label_names_line_and_column():
    problems = validate_manifest(_df(label="flu"), classes=task_classes("paper_a"))
    assert len(problems) == 1
    assert problems[0].line == 3 and problems[0].column == "label" and "flu" in problems[0].message


def test_missing_file_and_duplicate_path(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    df = _df(path="a.png")
    msgs = [str(p) for p in validate_manifest(df, root=tmp_path)]
    assert any("duplicate path 'a.png'" in m and "line 3" in m for m in msgs)
    df = _df()
    msgs = [str(p) for p in validate_manifest(df, root=tmp_path)]
    assert msgs == [f"error: line 3, column 'path': file not found: {tmp_path / 'b.png'}"]


def test_bad_split_and_fold_and_empty_patient():
    df = _df(split="training", patient_id="")
    df["fold"] = ["0", "x"]
    cols = sorted(p.column for p in validate_manifest(df))
    assert cols == ["fold", "patient_id", "split"]


def test_missing_column_raises_on_read(tmp_path):
    f = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.png"], "label": ["normal"]}).to_csv(f, index=False)
    with pytest.raises(ManifestError) as err:
        read_manifest(f)
    assert "patient_id" in str(err.value) and str(f) in str(err.value)


def test_roundtrip_keeps_strings(tmp_path):
    df = _df(patient_id="007", findings="")
    out = write_manifest(df, tmp_path / "m.csv")
    back = read_manifest(out)
    assert back.loc[1, "patient_id"] == "007" and back.loc[1, "findings"] == ""
    with pytest.raises(ManifestError):
        check_manifest(back, classes=("normal",))


def test_taxonomy_tables():
    assert task_classes("paper-a") == ("normal", "pneumonia", "other_disease", "covid19")
    assert task_classes("paper_b") == ("normal", "pneumonia", "covid19")
    assert len(NIH_FINDINGS) == 14 and normalize_task("source") == "nih14"
    with pytest.raises(ValueError):
        normalize_task("paper_c")

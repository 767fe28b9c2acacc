"""Which models and images the heatmap notebook explains."""

from __future__ import annotations

import pandas as pd
import pytest

from cxrlib.report.heatmaps import heatmap_fold, select_images, fold_test_rows

KFOLD = {"name": "x", "split": {"kind": "kfold", "k": 3}, "strategies": {"a": {}}, "heatmaps": {"fold": 1}}
HOLDOUT = {"name": "x", "split": {"kind": "holdout"}, "strategies": {"a": {}}, "heatmaps": {}}


def _target(n: int = 30) -> pd.DataFrame:
    labels = ["normal", "pneumonia", "covid19"]
    return pd.DataFrame({
        "path": [f"p{i}.png" for i in range(n)], "label": [labels[(i // 3) % 3] for i in range(n)],
        "fold": [str(i % 3) for i in range(n)], "split": ["test" if i % 2 else "train" for i in range(n)],
        "mask_path": [f"m{i}.png" for i in range(n)]})


def test_fold_choice():
    assert heatmap_fold(KFOLD) == 1 and heatmap_fold(HOLDOUT) == -1
    with pytest.raises(ValueError, match="not a fold"):
        heatmap_fold({**KFOLD, "heatmaps": {"fold": 7}})


def test_images_come_from_the_test_fold_and_have_lesions():
    t = _target()
    rows = select_images(t, KFOLD, n=6)
    assert len(rows) == 6 and set(rows["path"]) <= set(t[t["fold"] == "1"]["path"])
    assert "normal" not in set(rows["label"])  # a normal image has no lesion to score
    assert set(rows["label"]) == {"pneumonia", "covid19"}  # spread over the classes
    hold = select_images(t, HOLDOUT, n=4)
    assert set(hold["path"]) <= set(t[t["split"] == "test"]["path"])
    assert list(fold_test_rows(t, HOLDOUT)["path"]) == list(t[t["split"] == "test"]["path"])

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


def test_marker_rows_and_explainer_options():
    from cxrlib.report.heatmaps import explainer_options, marker_rows

    t = _target().assign(text_box=["1,2,3,4" if i % 5 == 0 else "" for i in range(30)])
    marked = marker_rows(t, KFOLD, n=10)
    assert len(marked) and (marked["text_box"] != "").all() and set(marked["fold"]) == {"1"}
    assert len(marker_rows(_target(), KFOLD)) == 0  # no text_box column: nothing, no error
    assert explainer_options({"min_cam_size": 8, "lrp": {"epsilon": 1e-7}}) == {"epsilon": 1e-7, "min_cam_size": 8}
    assert explainer_options({}) == {}


def test_failure_cases_pick_the_best_pair_and_its_worst_images():
    import numpy as np

    from cxrlib.explain.base import Heatmaps
    from cxrlib.explain.scoring import localisation_summary, score_heatmap_set
    from cxrlib.report.heatmaps import display_maps, failure_cases

    masks = np.zeros((4, 8, 8), bool)
    masks[:, :4, :4] = True  # lesion: top-left quadrant, area share 0.25
    good = np.zeros((4, 8, 8), np.float32)
    good[:, 1, 1] = 1.0  # all mass on the lesion
    good[3] = 0.0
    good[3, 6, 6] = 1.0  # ... except image 3
    flat = np.ones((4, 8, 8), np.float32)  # uniform map: chance
    sets = {("m", "gradcam"): Heatmaps(good, np.zeros(4, int), np.ones(4, np.float32)),
            ("m", "lrp.epsilon"): Heatmaps(flat - 2 * good, np.zeros(4, int), np.ones(4, np.float32), signed=True)}
    paths = [f"p{i}" for i in range(4)]
    scores = score_heatmap_set(sets, masks, paths, classes=["covid19"])
    summary = localisation_summary(scores).set_index(["method", "metric"])
    assert summary.loc[("gradcam", "mass_inside"), "mean"] == pytest.approx(0.75)
    assert summary.loc[("gradcam", "mass_inside"), "x_chance"] == pytest.approx(3.0)
    assert summary.loc[("gradcam", "pointing_game"), "mean"] == pytest.approx(0.75)
    assert set(scores["class"]) == {"covid19"}
    best, worst = failure_cases(scores, n=1)
    assert best == ("m", "gradcam") and worst == ["p3"]
    shown = display_maps(sets)
    assert set(shown) == {"m\ngradcam", "m\nlrp.epsilon"} and shown["m\nlrp.epsilon"].max() == 1.0


def test_shortcut_table_shows_enrichment_flips_control_and_verdict():
    from cxrlib.report.heatmaps import shortcut_table

    audit = pd.DataFrame([
        {"path": f"p{i}", "model": m, "method": meth, "region": "text", "mass": mass, "area": 0.05}
        for i in range(4) for m, meth, mass in (("clean", "lrp.epsilon", 0.04), ("clean", "gradcam", 0.06),
                                                ("shortcut", "lrp.epsilon", 0.30), ("shortcut", "gradcam", 0.02))])
    abl = pd.DataFrame([{"model": m, "region": r, "n": 40, "n_masked": 20, "changed": c}
                        for m, flips in (("clean", (0.05, 0.05)), ("shortcut", (0.4, 0.05)))
                        for r, c in zip(("text", "text_control"), flips)]
                       + [{"model": m, "region": "none", "n": 40, "n_masked": 0, "changed": 0.0}
                          for m in ("clean", "shortcut")])
    table, verdict = shortcut_table(audit, abl)
    t = table.set_index("model")
    # the best method's enrichment per model: gradcam 1.2 for clean, lrp 6.0 for the shortcut model
    assert t.loc["clean", "method"] == "gradcam" and t.loc["clean", "enrichment"] == pytest.approx(1.2)
    assert t.loc["shortcut", "enrichment"] == pytest.approx(6.0)
    assert t.loc["shortcut", "flips"] == pytest.approx(0.8) and t.loc["shortcut", "flips_control"] == pytest.approx(0.1)
    assert t.loc["clean", "excess"] == pytest.approx(0.0)
    v = verdict.set_index("model")["verdict"]
    assert v["shortcut"] == "relevance and effect" and v["clean"] == "no evidence"


def test_all_scorable_images_are_scored_and_the_grid_shows_the_usual_sample():
    from cxrlib.report.heatmaps import scored_count, shown_positions

    t = _target(90)
    rows = select_images(t, KFOLD, n=None)  # heatmaps.n_scored: all
    fold = t[(t["fold"] == "1") & (t["label"] != "normal")]
    assert list(rows["path"]) == list(fold["path"])  # every lesion image of the test fold, in manifest order
    shown = shown_positions(rows, 6)
    # the grid shows exactly the images the 6-image selection picks (same sample, same order)
    assert list(rows["path"].iloc[shown]) == list(select_images(t, KFOLD, n=6)["path"])
    assert scored_count({"n_scored": "all", "n_images": 6}) is None
    assert scored_count({"n_scored": 30}) == 30 and scored_count({"n_images": 6}) == 6 and scored_count({}) == 8
    for bad in ("many", 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_scored"):
            scored_count({"n_scored": bad})


def test_display_maps_pick_and_fold_accuracy(tmp_path):
    import json

    import numpy as np

    from cxrlib.explain.base import Heatmaps
    from cxrlib.report.heatmaps import display_maps, fold_accuracy

    maps = np.random.default_rng(0).random((5, 4, 4)).astype(np.float32)
    h = Heatmaps(maps=maps, class_index=np.zeros(5, int), prob=np.ones(5), signed=False)
    picked = display_maps({("m", "gradcam"): h}, [3, 1])["m\ngradcam"]
    assert picked.shape == (2, 4, 4) and np.allclose(picked, h.display()[[3, 1]])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.75}}))
    (tmp_path / "b").mkdir()  # no metrics.json (stage not run): left out
    assert fold_accuracy({"a": tmp_path / "a", "b": tmp_path / "b"}) == {"a": 0.75}

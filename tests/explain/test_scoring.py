import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrlib.explain import scoring as S


def test_mass_inside_counts_positive_relevance_only():
    h = np.array([[4.0, -10.0], [1.0, 0.0]])  # positive mass 5, 4 of it at (0, 0)
    m = np.array([[True, False], [False, False]])
    assert S.mass_inside(h, m) == pytest.approx(0.8)
    assert np.isnan(S.mass_inside(-np.ones((2, 2)), m))


def test_pointing_game_with_tolerance():
    h = np.zeros((10, 10))
    h[0, 0] = 1.0
    m = np.zeros((10, 10), bool)
    m[3:6, 3:6] = True
    assert not S.pointing_game(h, m)
    assert not S.pointing_game(h, m, tolerance=4.0)  # distance from (0,0) to (3,3) is 4.24
    assert S.pointing_game(h, m, tolerance=4.3)
    h[4, 4] = 1.0  # tie: one peak inside
    assert S.pointing_game(h, m)
    assert not S.pointing_game(np.zeros((10, 10)), m)


def test_auc_matches_sklearn_and_edge_cases():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(16, 16))
    m = rng.uniform(size=(16, 16)) > 0.7
    assert S.heatmap_auc(h, m) == pytest.approx(roc_auc_score(m.ravel(), h.ravel()))
    assert S.heatmap_auc(m.astype(float), m) == 1.0
    assert np.isnan(S.heatmap_auc(h, np.zeros_like(m)))
    with pytest.raises(ValueError, match="shape"):
        S.heatmap_auc(h, m[:8])


def test_box_mask_scales_from_1024_frame():
    m = S.box_mask([(512, 256, 256, 128)], stored_shape=(256, 256), image_size=64, frame_shape=(1024, 1024))
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (16, 23, 32, 47)

def test_box_mask_non_square_follows_pipeline_padding():
    # 100x200 image padded to a square: rows 0..99 land in rows 16..47 of 64 (black bars above/below)
    m = S.box_mask([(0, 0, 200, 100)], stored_shape=(100, 200), image_size=64, resize_mode="pad")
    rows = np.nonzero(m.any(axis=1))[0]
    assert (rows.min(), rows.max()) == (16, 47) and m[16:48].all()
    left = S.box_mask([(0, 0, 100, 100)], stored_shape=(100, 200), image_size=64, resize_mode="crop")
    assert left[:, :31].all() and not left[:, 33:].any()  # centred crop keeps columns 50..149 -> 0..31


def test_nih_box_masks_merge_boxes_per_finding():
    boxes = pd.DataFrame({"path": ["a.png", "a.png", "b.png"], "finding": ["Mass", "Mass", "Nodule"],
                          "x": [0, 512, 0], "y": [0, 512, 0], "w": [256, 256, 1024], "h": [256, 256, 1024],
                          "frame_width": [1024] * 3, "frame_height": [1024] * 3})
    masks = S.nih_box_masks(boxes, ["a.png"], [(256, 256)], image_size=32)
    assert list(masks) == [("a.png", "Mass")]
    assert masks[("a.png", "Mass")].sum() == 2 * 8 * 8


def test_score_and_summarize_tidy_table():
    m = np.zeros((2, 8, 8), bool)
    m[:, :4, :4] = True
    maps = np.zeros((2, 8, 8))
    maps[0, 1, 1] = 1.0  # on target
    scores = S.score_heatmaps(maps, m, ["p0", "p1"], method="gradcam", classes=["covid19", "covid19"], model="m")
    assert len(scores) == 6 and set(scores["metric"]) == set(S.METRICS)
    p0 = scores[scores.path == "p0"].set_index("metric")["value"]
    assert p0["mass_inside"] == 1.0 and p0["pointing_game"] == 1.0
    summ = S.summarize_scores(scores).set_index("metric")
    assert summ.loc["mass_inside", "n"] == 2 and summ.loc["mass_inside", "n_undefined"] == 1
    assert summ.loc["mass_inside", "chance"] == pytest.approx(0.25)
    assert summ.loc["pointing_game", "mean"] == pytest.approx(0.5)


def test_parse_box():
    assert S.parse_box("1,2,3,4") == (1, 2, 3, 4)
    assert S.parse_box("") is None
    with pytest.raises(ValueError, match="x,y,w,h"):
        S.parse_box("1,2")


@pytest.mark.shared_data
def test_real_nih_boxes_land_where_the_csv_says(nih_root):
    from cxrlib.data.adapters.nih import load_boxes

    boxes = load_boxes(nih_root)
    assert len(boxes) == 60
    row = boxes[boxes["path"].str.endswith("00008365_000.png")].iloc[0]  # Cardiomegaly 338,510,418,404
    paths = boxes["path"].drop_duplicates().head(5).tolist()
    if row["path"] not in paths:
        paths.append(row["path"])
    masks = S.nih_box_masks(boxes, paths, [(256, 256)] * len(paths), image_size=64)
    m = masks[(row["path"], "Cardiomegaly")]
    rows, cols = np.nonzero(m)
    # 1024 -> 64 is /16: rows 31.85..57.07, cols 21.1..47.2; pixel centres (r + 0.5) inside
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (32, 56, 21, 46)
    # a heatmap equal to the box scores perfectly; a map in the opposite corner scores zero
    maps = np.zeros((len(paths), 64, 64), np.float32)
    for i, p in enumerate(paths):
        for (q, _), mk in masks.items():
            if q == p:
                maps[i] = np.maximum(maps[i], mk)
    table = S.score_against_boxes(maps, paths, boxes, nih_root, 64, method="oracle")
    assert table.attrs["n_without_box"] == 0
    assert (table["value"] == 1.0).all()
    assert set(table["class"]) <= set(boxes["finding"])


def test_localisation_summary_reports_spread():
    import pandas as pd

    from cxrlib.explain.scoring import localisation_summary

    vals = [0.1, 0.3, np.nan, 0.2]  # one undefined (all-zero) map
    scores = pd.DataFrame({"model": "m", "method": "gradcam", "metric": "mass_inside", "value": vals,
                           "mask_fraction": 0.1, "path": list("abcd"), "class": ""})
    row = localisation_summary(scores).iloc[0]
    assert row["n"] == 4 and row["n_undefined"] == 1
    assert row["mean"] == pytest.approx(0.2) and row["std"] == pytest.approx(0.1)
    assert row["ci95"] == pytest.approx(1.96 * 0.1 / np.sqrt(3))
    assert row["x_chance"] == pytest.approx(2.0)


def test_landing_table_needs_both_criteria_and_says_when_the_interval_clears():
    import pandas as pd

    from cxrlib.explain.scoring import landing_table, localisation_summary

    rng = np.random.default_rng(0)

    def scores(model, method, mass, pointing, spread):
        n = 50
        mass_vals = mass + spread * rng.standard_normal(n)
        mass_vals = mass_vals - mass_vals.mean() + mass  # exact mean
        hits = (np.arange(n) < round(pointing * n)).astype(float)
        return pd.concat([
            pd.DataFrame({"model": model, "method": method, "metric": "mass_inside", "value": mass_vals,
                          "mask_fraction": 0.05, "path": [f"p{i}" for i in range(n)], "class": ""}),
            pd.DataFrame({"model": model, "method": method, "metric": "pointing_game", "value": hits,
                          "mask_fraction": 0.05, "path": [f"p{i}" for i in range(n)], "class": ""})])

    summary = localisation_summary(pd.concat([
        scores("a", "gradcam", 0.15, 0.7, 0.02),      # 3x chance, tight: lands, clear
        scores("a", "lrp", 0.105, 0.6, 0.05),        # 2.1x chance, wide interval: lands, not clear
        scores("b", "gradcam", 0.15, 0.4, 0.02),      # mass fine, pointing 0.4: does not land
        scores("b", "lrp", 0.095, 0.9, 0.01),         # 1.9x chance: does not land
    ]))
    table = landing_table(summary, accuracy={"b": 0.9, "a": 0.8}).set_index(["model", "method"])
    assert list(dict.fromkeys(m for m, _ in table.index)) == ["b", "a"]  # the accuracy's order
    assert table.loc[("a", "gradcam"), ["lands", "clear"]].tolist() == [True, True]
    assert table.loc[("a", "lrp"), ["lands", "clear"]].tolist() == [True, False]
    assert not table.loc[("b", "gradcam"), "lands"] and not table.loc[("b", "lrp"), "lands"]
    assert table.loc[("a", "gradcam"), "mass_x_chance"] == pytest.approx(3.0)
    assert table.loc[("b", "lrp"), "accuracy"] == 0.9 and table.loc[("a", "lrp"), "n"] == 50
    lrp = summary[(summary["model"] == "a") & (summary["method"] == "lrp") & (summary["metric"] == "mass_inside")]
    assert table.loc[("a", "lrp"), "mass_x_ci95"] == pytest.approx(float(lrp["ci95"].iloc[0] / 0.05))

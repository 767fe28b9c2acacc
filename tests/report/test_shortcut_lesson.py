"""The shortcut lesson's wiring (issue 11 item 3): plan stage, twin manifest, explained models."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrlib.data import manifest as mf
from cxrlib.data.phantoms import generate_phantoms
from cxrlib.report.config import load_experiment
from cxrlib.report.heatmaps import heatmap_models
from cxrlib.report.locate import packaged_experiments_dir
from cxrlib.report.notebook import StageContext
from cxrlib.report.plan import build_plan
from cxrlib.report.results import collect_metrics
from cxrlib.report.shortcut import build_shortcut_twin, shortcut_options, twin_manifest


def _cfg(**change):
    cfg = load_experiment(packaged_experiments_dir() / "paper_b.yaml", smoke=True)
    cfg.update(change)
    return cfg


def test_plan_adds_one_shortcut_stage_outside_the_strategies():
    cfg = _cfg()
    plan = build_plan(cfg)
    lesson = [s for s in plan if s.kind == "shortcut"]
    assert [s.id for s in lesson] == ["03_transfer-shortcut-twice"]
    stage = lesson[0]
    assert stage.notebook == "03_transfer.ipynb"
    assert stage.params == {"strategy": "twice", "folds": [0], "manifest": "target_shortcut", "stage_kind": "shortcut"}
    assert "02_source_pretraining" in stage.depends  # twice starts from the source model
    ids = [s.id for s in plan]
    heat = next(s for s in plan if s.kind == "heatmaps")
    assert stage.id in heat.depends and ids.index(stage.id) < ids.index(heat.id)
    # the comparison reads only ``transfer`` stages: the lesson model is not one of them
    assert all("shortcut" not in s.id for s in plan if s.kind == "transfer")
    without = {k: v for k, v in cfg.items() if k != "shortcut_demo"}
    assert not [s for s in build_plan(without) if s.kind == "shortcut"]
    # notebook 5 waits for the models it explains only (twice + ONK, the clean twice, the lesson
    # model): it can start while `imagenet` still trains
    assert set(heat.depends) == {"01_data", "03_transfer-twice_onk", "03_transfer-twice", stage.id}
    every = next(s for s in build_plan({**without, "heatmaps": {**cfg["heatmaps"], "strategies": None}})
                 if s.kind == "heatmaps")
    assert set(every.depends) == {"01_data"} | {f"03_transfer-{n}" for n in cfg["strategies"]}
    with pytest.raises(ValueError, match=r"heatmaps\.strategies: \['nope'\]"):
        build_plan({**cfg, "heatmaps": {**cfg["heatmaps"], "strategies": ["nope"]}})


def test_shortcut_block_errors_name_the_key():
    cfg = _cfg()
    with pytest.raises(ValueError, match=r"shortcut_demo\.strategy: 'nope'"):
        shortcut_options({**cfg, "shortcut_demo": {"strategy": "nope"}})
    with pytest.raises(ValueError, match=r"shortcut_demo\.shortcut_strength"):
        shortcut_options({**cfg, "shortcut_demo": {"strategy": "twice", "shortcut_strength": 2}})
    with pytest.raises(ValueError, match="phantoms"):
        shortcut_options({**cfg, "data": {**cfg["data"], "kind": "real"}})


def test_twin_keeps_rows_and_folds_and_moves_only_the_text(tmp_path: Path):
    cfg = _cfg()
    root, stage_dir = tmp_path / "data", tmp_path / "01_data"
    generate_phantoms(root / "target", task="paper_b", n=24, seed=3, image_size=32, shortcut_strength=0.0)
    target = mf.read_manifest(root / "target" / "manifest.csv")
    target["path"] = "target/" + target["path"]
    target["mask_path"] = [f"target/{m}" if m else "" for m in target["mask_path"]]
    target = target.iloc[1:].copy()  # one row set aside by the data stage: the twin must not bring it back
    target["fold"] = [str(i % 2) for i in range(len(target))]
    mf.write_manifest(target, stage_dir / "target.csv")

    path = build_shortcut_twin(cfg, root, stage_dir)
    twin = mf.read_manifest(path)
    assert len(twin) == len(target)
    assert twin["fold"].tolist() == target["fold"].tolist()
    assert twin["label"].tolist() == target["label"].tolist()
    assert twin["patient_id"].tolist() == target["patient_id"].tolist()
    assert all(p.startswith("target_shortcut/") and (root / p).is_file() for p in twin["path"])
    # strength 1: the text is on exactly the COVID-19 images
    assert ((twin["shortcut"] == "1") == (twin["label"] == "covid19")).all()
    assert (twin["label"] == "covid19").any() and (twin["label"] != "covid19").any()

    bad = target.assign(path=target["path"].str.replace("target/", "other/"))
    with pytest.raises(ValueError, match="outside 'target/'"):
        twin_manifest(bad, mf.read_manifest(root / "target_shortcut" / "manifest.csv"))


def test_heatmap_models_puts_clean_and_shortcut_side_by_side(tmp_path: Path):
    cfg = _cfg()
    plan = build_plan(cfg)
    data = next(s for s in plan if s.kind == "data")
    ctx = StageContext(cfg, tmp_path, tmp_path / "stages" / "05_heatmaps", data)
    models = heatmap_models(ctx)
    assert list(models) == ["twice_onk", "twice", "shortcut/twice"]
    assert models["shortcut/twice"] == tmp_path / "stages" / "03_transfer-shortcut-twice" / "fold0"
    assert models["twice"] == tmp_path / "stages" / "03_transfer-twice" / "fold0"
    plain = {k: v for k, v in cfg.items() if k != "shortcut_demo"}
    assert list(heatmap_models(StageContext(plain, tmp_path, tmp_path, data))) == ["twice_onk"]


def test_comparison_tables_ignore_the_shortcut_stage(tmp_path: Path):
    from cxrlib.io import write_json

    cfg = _cfg()
    for s in build_plan(cfg):
        if s.kind in ("transfer", "shortcut"):
            for fold in s.params["folds"]:
                write_json(tmp_path / "stages" / s.id / f"fold{fold}" / "metrics.json", {"accuracy": 0.5, "macro_f1": 0.4})
    table = collect_metrics(tmp_path, cfg)
    assert not table["stage"].str.contains("shortcut").any()
    assert set(table["strategy"]) == set(cfg["strategies"])


def test_each_explained_model_has_the_manifest_it_was_trained_on(tmp_path: Path):
    from cxrlib.report.shortcut import model_manifest

    assert model_manifest(tmp_path, "shortcut/twice") == tmp_path / "stages" / "01_data" / "target_shortcut.csv"
    assert model_manifest(tmp_path, "twice") == tmp_path / "stages" / "01_data" / "target.csv"


def test_lesson_models_rows_table_and_sentence(tmp_path: Path):
    """Notebook 5's lesson section: the two models in order, their images, one table, one sentence."""
    import pandas as pd

    from cxrlib.io import write_json
    from cxrlib.report.lesson import lesson_models, lesson_rows, lesson_sentence, lesson_table

    cfg = _cfg()
    models = {"twice_onk": tmp_path / "a", "twice": tmp_path / "b", "shortcut/twice": tmp_path / "c"}
    lesson = lesson_models(models, cfg)
    assert list(lesson) == ["twice", "shortcut/twice"]
    assert lesson_models(models, {k: v for k, v in cfg.items() if k != "shortcut_demo"}) == {}
    with pytest.raises(ValueError, match="shortcut/twice"):
        lesson_models({"twice": tmp_path / "b"}, cfg)

    # the images: the twin's test images of the heatmap fold that carry the word (fold 0 here)
    twin = pd.DataFrame({"path": [f"target_shortcut/images/P{i}.png" for i in range(6)],
                         "label": ["covid19", "normal", "covid19", "covid19", "pneumonia", "covid19"],
                         "fold": ["0", "0", "1", "0", "0", "0"],
                         "text_box": ["1,1,27,8", "", "1,1,27,8", "2,1,27,8", "", "1,2,27,8"]})
    twin = twin.assign(patient_id=[f"P{i}" for i in range(6)], source="phantom-paper_b", view="PA",
                       findings=twin["label"])
    mf.write_manifest(twin, tmp_path / "stages" / "01_data" / "target_shortcut.csv")
    rows = lesson_rows(tmp_path, cfg, n=2)
    assert rows["path"].tolist() == ["target_shortcut/images/P0.png", "target_shortcut/images/P3.png"]
    assert len(lesson_rows(tmp_path, cfg, n=10)) == 3

    write_json(tmp_path / "b" / "metrics.json", {"test": {"accuracy": 0.70}})
    write_json(tmp_path / "c" / "metrics.json", {"test": {"accuracy": 0.90}})
    effects = pd.DataFrame([
        {"model": "shortcut/twice", "region": "text", "method": "gradcam", "enrichment": 3.1, "n_masked": 26,
         "flips": 0.5, "flips_control": 0.04, "excess": 0.46},
        {"model": "shortcut/twice", "region": "border", "method": "gradcam", "enrichment": 1.0, "n_masked": 79,
         "flips": 0.2, "flips_control": 0.4, "excess": -0.2},
        {"model": "twice", "region": "text", "method": "lrp.epsilon", "enrichment": 1.2, "n_masked": 30,
         "flips": 0.1, "flips_control": 0.07, "excess": 0.03}])
    verdict = pd.DataFrame({"model": ["shortcut/twice", "twice"], "verdict": ["relevance and effect", "no evidence"]})
    table = lesson_table(lesson, effects, verdict)
    assert table["model"].tolist() == ["twice", "shortcut/twice"]
    assert table["test accuracy"].tolist() == [0.70, 0.90]
    assert table["text enrichment"].tolist() == [1.2, 3.1]
    assert table["flips, text masked"].tolist() == [0.1, 0.5]
    assert table["verdict"].tolist() == ["no evidence", "relevance and effect"]
    sentence = lesson_sentence(table)
    for part in ("0.90", "0.70", "50%", "4%", "26 labelled", "3.1x", "relevance and effect", "no evidence",
                 "looks better than"):
        assert part in sentence, part
    # a model the audit did not reach is shown as such, not dropped
    partial = lesson_table(lesson, effects[effects["model"] != "twice"], verdict[verdict["model"] != "twice"])
    assert partial["verdict"].tolist() == ["not audited", "relevance and effect"]
    assert "n/a" in lesson_sentence(partial) and lesson_sentence(partial.head(1)) == ""

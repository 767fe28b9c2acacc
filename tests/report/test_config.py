"""Experiment configs: loading, --smoke shrinking, overrides, hashing, validation; the plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cxrlib.report.config import ConfigError, config_hash, deep_merge, load_experiment
from cxrlib.report.plan import build_plan, fits, fold_ids
from cxrlib.report.runner import EXPERIMENTS_DIR

SHIPPED = ("paper_a", "paper_b", "paper_a_real", "paper_b_real")


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("smoke", [False, True])
def test_shipped_configs_load_and_plan(name, smoke):
    cfg = load_experiment(EXPERIMENTS_DIR / f"{name}.yaml", smoke=smoke)
    plan = build_plan(cfg)
    ids = [s.id for s in plan]
    assert ids[0] == "01_data" and ids[-1] == "06_summary"
    transfer = [s for s in plan if s.kind == "transfer"]
    assert len(transfer) == len(cfg["strategies"])  # one notebook per strategy, a loop over its folds
    assert all(s.params["folds"] == fold_ids(cfg) for s in transfer)
    assert len(fits(cfg)) == len(cfg["strategies"]) * len(fold_ids(cfg))
    # every stage depends only on stages before it
    seen: set[str] = set()
    for s in plan:
        assert set(s.depends) <= seen, s.id
        seen.add(s.id)
    # every published claim names a strategy that the run trains
    for claim in cfg["paper"]["claims"]:
        assert claim["strategy"] in cfg["strategies"]


def test_paper_a_is_5_fold_and_paper_b_3_fold():
    a = load_experiment(EXPERIMENTS_DIR / "paper_a.yaml")
    b = load_experiment(EXPERIMENTS_DIR / "paper_b.yaml")
    # paper B's demo uses 3 folds (the paper: one hold-out split) so its claims have a spread
    assert fold_ids(a) == [0, 1, 2, 3, 4] and fold_ids(b) == [0, 1, 2]
    assert a["paper"]["claims"][0]["value"] == 0.9013 and a["paper"]["claims"][0]["std"] == 0.0014
    assert {c["metric"]: c["value"] for c in b["paper"]["claims"]} == {"accuracy": 0.994, "macro_f1": 0.994}
    # paper B: twice transfer with and without output neuron keeping, from one source stage
    assert b["strategies"]["twice_onk"]["keep_neurons"] == "default"
    assert sum(s.kind == "source" for s in build_plan(b)) == 1


def test_smoke_shrinks_and_changes_hash():
    path = EXPERIMENTS_DIR / "paper_a.yaml"
    full, smoke = load_experiment(path), load_experiment(path, smoke=True)
    assert smoke["split"]["k"] < full["split"]["k"]
    assert smoke["data"]["target"]["n"] < full["data"]["target"]["n"]
    assert smoke["transfer"]["train"]["epochs"] == 1
    assert smoke["transfer"]["train"]["lr"] == full["transfer"]["train"]["lr"]  # merged, not replaced
    assert "smoke" not in yaml.safe_dump(smoke["data"])
    assert config_hash(full) != config_hash(smoke)
    assert config_hash(full) == config_hash(load_experiment(path))


def test_overrides_and_hash_ignores_file_location(tmp_path: Path):
    src = EXPERIMENTS_DIR / "paper_b.yaml"
    copy = tmp_path / "elsewhere.yaml"
    copy.write_text(src.read_text())
    assert config_hash(load_experiment(src)) == config_hash(load_experiment(copy))
    cfg = load_experiment(src, overrides={"transfer.train.epochs": "7", "stage.backbone": "densenet121"})
    assert cfg["transfer"]["train"]["epochs"] == 7 and cfg["stage"]["backbone"] == "densenet121"


def test_deep_merge_leaves_inputs_untouched():
    base = {"a": {"b": 1, "c": 2}}
    out = deep_merge(base, {"a": {"b": 5}})
    assert out == {"a": {"b": 5, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize("broken, message", [
    ({"task": "paper_c"}, "unknown task"),
    ({"split": {"kind": "kfold", "k": 1}}, "split.k"),
    ({"data": {"kind": "somewhere"}}, "data.kind"),
    ({"strategies": {}}, "strategies"),
])
def test_bad_configs_name_the_key(tmp_path: Path, broken, message):
    cfg = yaml.safe_load((EXPERIMENTS_DIR / "paper_a.yaml").read_text())
    cfg.update(broken)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


def test_missing_key_and_missing_file(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match="missing required key"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_smoke_adds_no_heatmaps_stage_to_a_config_without_heatmaps(tmp_path: Path):
    from cxrlib.report.plan import build_plan

    cfg = {"name": "toy", "task": "paper_a", "data": {"kind": "phantoms", "target": {"n": 10}},
           "split": {"kind": "kfold", "k": 2}, "strategies": {"scratch": {}}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    smoke = load_experiment(path, smoke=True)
    assert "heatmaps" not in smoke and "05_heatmaps" not in [s.id for s in build_plan(smoke)]
    # a config with heatmaps gets the smoke sizes
    with_heat = load_experiment(EXPERIMENTS_DIR / "paper_b.yaml", smoke=True)["heatmaps"]
    assert with_heat["n_images"] == 3 and with_heat["n_scored"] == 6

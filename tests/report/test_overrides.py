"""--set overrides are checked against the experiment schema before anything runs."""

from __future__ import annotations

import pytest

from cxrlib.report.config import ConfigError, load_experiment
from cxrlib.report.locate import packaged_experiments_dir

PAPER_B = packaged_experiments_dir() / "paper_b.yaml"


@pytest.mark.parametrize("key, value, message", [
    ("nonexistent.key", "1", r"nonexistent\.key.*no key 'nonexistent' under the top level"),
    ("stage.image_size", "-5", r"stage\.image_size.*must be > 0"),
    ("transfer.train.epochs", "abc", r"transfer\.train\.epochs.*expected integer, got text"),
    ("split.k", "2.5", r"split\.k.*expected integer"),
    ("transfer.train.epoch", "3", r"no key 'epoch'"),
    ("stage.imagesize", "32", r"no key 'imagesize'"),
    ("data.kind.x", "1", r"data\.kind is a text"),
    ("heatmaps.n_scored", "0", r"heatmaps\.n_scored.*must be > 0"),
    ("heatmaps.n_scored", "many", r"heatmaps\.n_scored must be 'all' or a positive integer, got 'many'"),
    ("heatmaps.n_scored", "[1]", r"heatmaps\.n_scored.*expected integer or text"),
])
def test_bad_overrides_are_rejected_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(PAPER_B, smoke=True, overrides={key: value})


def test_good_overrides_including_schema_keys_not_in_the_file():
    cfg = load_experiment(PAPER_B, smoke=True, overrides={
        "transfer.train.epochs": "3", "stage.image_size": "48", "transfer.train.plateau_patience": "4",
        "source.max_images": "100", "strategies.twice.train.lr": "0.01", "transfer.train.lr_schedule": "null"})
    assert cfg["transfer"]["train"]["epochs"] == 3 and cfg["stage"]["image_size"] == 48
    assert cfg["transfer"]["train"]["plateau_patience"] == 4 and cfg["source"]["max_images"] == 100
    assert cfg["strategies"]["twice"]["train"]["lr"] == 0.01
    # heatmaps.n_scored is "all" or a count, whichever the file has
    assert load_experiment(PAPER_B, overrides={"heatmaps.n_scored": "30"})["heatmaps"]["n_scored"] == 30
    assert load_experiment(PAPER_B, smoke=True, overrides={"heatmaps.n_scored": "all"})["heatmaps"]["n_scored"] == "all"


def test_cli_rejects_before_running(tmp_path, capsys):
    from cxrlib.cli import main

    code = main(["run", "paper_b", "--smoke", "--out", str(tmp_path), "--set", "stage.image_size=-5"])
    assert code == 2 and "stage.image_size" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run folder was made


def test_dataset_paths_are_an_open_mapping():
    from cxrlib.report.overrides import OverrideError, check_override
    cfg = {"data": {"kind": "real"}}
    check_override(cfg, "data.datasets.nih", "/mnt/nih")
    with pytest.raises(OverrideError, match="no key"):
        check_override(cfg, "data.datasets.nih.extra", "/mnt/nih")


def test_optional_heatmap_keys_are_known_with_their_kind():
    from cxrlib.report.overrides import OverrideError, check_override
    cfg = {"heatmaps": {"methods": ["gradcam"]}}
    check_override(cfg, "heatmaps.min_cam_size", 8)
    with pytest.raises(OverrideError, match="expected integer"):
        check_override(cfg, "heatmaps.min_cam_size", "big")
    with pytest.raises(OverrideError, match="must be > 0|no key"):
        check_override(cfg, "heatmaps.min_cam_sise", 8)

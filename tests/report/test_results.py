"""Result tables and the index page's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from cxrlib.report.index import write_index
from cxrlib.report.progress import Progress, format_seconds
from cxrlib.report.results import format_mean_std, paper_comparison, summarize, write_results


def _toy_run(tmp_path: Path) -> tuple[Path, dict]:
    cfg = {
        "name": "toy", "title": "Toy", "task": "paper_a",
        "paper": {"short": "A", "claims": [
            {"metric": "accuracy", "value": 0.9013, "std": 0.0014, "strategy": "b"},
            {"metric": "accuracy", "value": 0.5, "strategy": "missing"}]},
        "data": {"kind": "phantoms"}, "split": {"kind": "kfold", "k": 3},
        "strategies": {"a": {}, "b": {}},
    }
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    for s in ("a", "b"):
        for f in range(3):
            d = run / "stages" / f"03_transfer-{s}" / f"fold{f}"
            d.mkdir(parents=True)
            acc = float(rng.uniform(0.5, 0.9))
            m = {"test": {"accuracy": acc, "macro_f1": acc - 0.1, "n": 10, "per_class": {},
                          "confusion_matrix": [[1, 0], [0, 1]]}}
            (d / "metrics.json").write_text(json.dumps(m))
    return run, cfg


def test_summary_is_mean_and_sample_std_of_the_folds(tmp_path: Path):
    run, cfg = _toy_run(tmp_path)
    tables = write_results(run, cfg)
    for s in ("a", "b"):
        accs = [json.loads((run / "stages" / f"03_transfer-{s}" / f"fold{f}" / "metrics.json").read_text())
                ["test"]["accuracy"] for f in range(3)]
        row = tables["summary"].query("strategy == @s and metric == 'accuracy'").iloc[0]
        assert row["mean"] == np.mean(accs) and math.isclose(row["std"], np.std(accs, ddof=1))
        assert row["n"] == 3
    comp = tables["paper_comparison"]
    assert comp.loc[0, "published"] == 0.9013 and comp.loc[0, "this_run"] == tables["summary"].query(
        "strategy == 'b' and metric == 'accuracy'")["mean"].iloc[0]
    assert not comp.loc[0, "same_data"] and "phantom" in comp.loc[0, "data"]
    assert math.isnan(comp.loc[1, "this_run"]) and "no 'accuracy'" in comp.loc[1, "note"]


def test_index_shows_the_csv_numbers(tmp_path: Path):
    run, cfg = _toy_run(tmp_path)
    tables = write_results(run, cfg)
    (run / "config.yaml").write_text(json.dumps(cfg))
    (run / "run.json").write_text(json.dumps({"experiment": "toy", "run_id": "r1", "status": "complete",
                                              "plan": ["01_data"], "stages": {}}))
    soup = BeautifulSoup(write_index(run).read_text(), "html.parser")
    cells = soup.select("#paper-comparison td[data-col=this_run]")
    assert float(cells[0]["data-value"]) == tables["paper_comparison"].loc[0, "this_run"]
    assert cells[0].get_text() == format_mean_std(tables["paper_comparison"].loc[0, "this_run"],
                                                  tables["paper_comparison"].loc[0, "this_run_std"])
    assert "different data" in soup.select_one("#paper-comparison").get_text()
    summary = tables["summary"].set_index(["strategy", "metric"])
    for row in soup.select("#strategy-summary tr")[1:]:
        strategy = row.find("td").get_text()
        for td in row.select("td[data-metric]"):
            assert float(td["data-value"]) == summary.loc[(strategy, td["data-metric"]), "mean"]


def test_index_shows_the_claims_tests_and_the_localisation(tmp_path: Path):
    """The index page carries notebook 4's claims tests and notebook 5's localisation (issue 11)."""
    from cxrlib.claims import claims_table

    run, cfg = _toy_run(tmp_path)
    write_results(run, cfg)
    (run / "config.yaml").write_text(json.dumps(cfg))
    (run / "run.json").write_text(json.dumps({"experiment": "toy", "run_id": "r1", "status": "complete",
                                              "plan": ["01_data"], "stages": {}}))
    metrics = pd.DataFrame([{"strategy": s, "fold": f, "metric": "accuracy", "value": v}
                            for s, vals in (("a", [0.8, 0.82, 0.9]), ("b", [0.6, 0.7, 0.65]))
                            for f, v in enumerate(vals)])
    claims = claims_table(metrics, pd.DataFrame(), [{"claim": "a beats b", "paper": "A", "kind": "paired_folds",
                                                    "a": "a", "b": "b", "metric": "accuracy", "expect": "greater"}])
    (run / "stages" / "04_cross_validation").mkdir(parents=True)
    claims.to_csv(run / "stages" / "04_cross_validation" / "claims.csv", index=False)
    heat = run / "stages" / "05_heatmaps"
    heat.mkdir(parents=True)
    pd.DataFrame([{"model": "a", "method": "gradcam", "metric": "mass_inside", "mean": 0.2, "n": 12,
                   "chance": 0.08, "x_chance": 2.5},
                  {"model": "a", "method": "gradcam", "metric": "pointing_game", "mean": 0.5, "n": 12,
                   "chance": 0.08, "x_chance": 6.25},
                  {"model": "a", "method": "lrp", "metric": "mass_inside", "mean": 0.3, "n": 12,
                   "chance": 0.08, "x_chance": 3.75},   # mass enough, pointing game not: does not land
                  {"model": "a", "method": "lrp", "metric": "pointing_game", "mean": 0.45, "n": 12,
                   "chance": 0.08, "x_chance": 5.6}]).to_csv(heat / "scores_summary.csv", index=False)
    pd.DataFrame([{"model": "a", "verdict": "no evidence", "evidence": "text enrichment 0.9"}]).to_csv(
        heat / "shortcut_verdict.csv", index=False)
    soup = BeautifulSoup(write_index(run).read_text(), "html.parser")
    p_cell = soup.select_one("#claims td[data-col=p_value]")
    assert float(p_cell["data-value"]) == pytest.approx(claims.loc[0, "p_value"])
    assert float(soup.select_one("#claims td[data-col=difference]")["data-value"]) == pytest.approx(
        claims.loc[0, "difference"])
    assert "a beats b" in soup.select_one("#claims").get_text()
    assert float(soup.select_one("#localisation td[data-col=x_chance]")["data-value"]) == 2.5
    assert float(soup.select_one("#localisation td[data-col=pointing_game]")["data-value"]) == 0.5
    assert [td.get_text() for td in soup.select("#localisation td[data-col=lands]")] == ["yes", "no"]
    assert "no evidence" in soup.select_one("#shortcut-verdicts").get_text()


def test_paper_comparison_without_results_is_nan_not_zero():
    cfg = {"name": "x", "data": {"kind": "real", "source": {}, "target": {"adapters": [{"adapter": "nih"}]}},
           "paper": {"claims": [{"metric": "accuracy", "value": 0.9, "strategy": "s"}]}}
    comp = paper_comparison(cfg, summarize(pd.DataFrame(columns=["strategy", "fold", "metric", "value"])))
    assert math.isnan(comp.loc[0, "this_run"]) and comp.loc[0, "n"] == 0


def test_progress_estimates_remaining_from_measured_rate():
    import io

    p = Progress({"a": 1.0, "b": 3.0}, stream=io.StringIO(), heartbeat=0)
    assert p.remaining() is None
    p.stage_started("a", "A")
    p.stage_finished("a", "A", seconds=10.0)
    assert p.remaining() == 30.0  # 3 units left at 10 s per unit
    p.stage_finished("b", "B", seconds=0.0, status="skipped")
    assert p.remaining() == 0.0
    assert format_seconds(75.3) == "1:15" and format_seconds(3725) == "1:02:05" and format_seconds(None) == "?"


def test_init_chain_read_from_the_stages_config_json(tmp_path: Path):
    from cxrlib.io import write_json
    from cxrlib.report.results import init_chain, init_chains

    src = tmp_path / "stages" / "02_source_pretraining"
    write_json(src / "config.json", {"config": {"name": "source", "task": "nih14"},
                                     "init": {"init": "scratch (imagenet unavailable)"}})
    cfg = {"name": "t", "task": "paper_b", "data": {"kind": "phantoms"}, "split": {"kind": "holdout"},
           "strategies": {"scratch": {}, "twice_onk": {}, "imagenet": {}}}
    stages = tmp_path / "stages"
    write_json(stages / "03_transfer-twice_onk" / "holdout" / "config.json",
               {"config": {"name": "twice_onk", "source_dir": str(src)}, "init": {"init": f"source:{src}/model.h5"}})
    write_json(stages / "03_transfer-scratch" / "holdout" / "config.json",
               {"config": {"name": "scratch"}, "init": {"init": "scratch"}})
    assert init_chain(stages / "03_transfer-twice_onk" / "holdout") == \
        "scratch (ImageNet unavailable) -> nih14 -> target"
    write_json(src / "config.json", {"config": {"name": "source", "task": "nih14"}, "init": {"init": "imagenet"}})
    chains = dict(init_chains(tmp_path, cfg).itertuples(index=False))
    assert chains == {"scratch": "scratch -> target", "twice_onk": "imagenet -> nih14 -> target",
                      "imagenet": "?"}  # the imagenet stage did not run

"""The runner on tiny stand-in notebooks (no TensorFlow): order, fan-out, resume, failure."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from cxrlib.report.config import load_experiment
from cxrlib.report.plan import NOTEBOOKS, build_plan
from cxrlib.report.runner import RunFailed, run_experiment

BODY = '''
import json, pathlib, yaml
cfg = yaml.safe_load(open(config_path))
sd = pathlib.Path(stage_dir)
with open(pathlib.Path(run_dir) / "executions.log", "a") as f:
    f.write(sd.name + "\\n")
if sd.name == cfg.get("fail_at"):
    raise ValueError("planned failure in " + sd.name)
(sd / "out.txt").write_text("ok")
for fold in (folds if strategy else []):
    acc = 0.5 + 0.1 * fold + len(strategy) / 100
    (sd / f"fold{fold}").mkdir(exist_ok=True)
    (sd / f"fold{fold}" / "metrics.json").write_text(json.dumps({"accuracy": acc, "macro_f1": acc - 0.05}))
if sd.name == "06_summary":
    from cxrlib.report.results import write_results
    write_results(run_dir, cfg, sd)
'''


def _notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'config_path = ""\nrun_dir = ""\nstage_dir = ""\ndata_root = ""\nstrategy = None\nfold = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# stand-in"), params, nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture()
def fake(tmp_path: Path):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    for name in NOTEBOOKS.values():
        nbformat.write(_notebook(), str(nb_dir / name))
    cfg = {
        "name": "toy", "title": "Toy", "task": "paper_a",
        "paper": {"short": "A", "claims": [{"metric": "accuracy", "value": 0.9013, "std": 0.0014,
                                            "strategy": "domain_extension"}]},
        "data": {"kind": "phantoms", "target": {"n": 10}},
        "split": {"kind": "kfold", "k": 2, "folds": [0]},  # 2 folds, only fold 0 run: a small plan
        "strategies": {"scratch": {}, "domain_extension": {}},
        "smoke": {"transfer": {"epochs": 1}},
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return nb_dir, path, tmp_path / "reports"


def _executions(run_dir: Path) -> list[str]:
    return (run_dir / "executions.log").read_text().split()


def test_run_order_fanout_resume_and_force(fake):
    nb_dir, cfg_path, out = fake
    r1 = run_experiment(cfg_path, out=out, notebooks_dir=nb_dir, jobs=2)
    ran = _executions(r1.run_dir)
    expected = ["01_data", "02_source_pretraining", "04_cross_validation", "06_summary"] + [
        f"03_transfer-{s}" for s in ("scratch", "domain_extension")]
    assert sorted(ran) == sorted(expected)  # no heatmaps block -> no 05; each stage once
    # two at a time, but every stage after the stages it depends on
    plan = {s.id: s for s in build_plan(load_experiment(cfg_path))}
    for i, sid in enumerate(ran):
        assert set(plan[sid].depends) <= set(ran[:i]), sid
    for sid in ran:
        assert (r1.run_dir / "notebooks" / f"{sid}.html").is_file()
    assert json.loads((r1.run_dir / "run.json").read_text())["status"] == "complete"
    summary = (r1.run_dir / "stages" / "06_summary" / "summary.csv").read_text()
    assert "domain_extension,accuracy" in summary

    # Same config again: resumed, nothing executed.
    r2 = run_experiment(cfg_path, out=out, notebooks_dir=nb_dir)
    assert r2.run_dir == r1.run_dir and r2.executed == [] and len(r2.skipped) == len(ran)
    assert _executions(r1.run_dir) == ran

    # A stage whose output vanished runs again; stages after it keep their outputs (their
    # hash depends on the upstream stage's hash, which is unchanged).
    (r1.run_dir / "stages" / "03_transfer-scratch" / "out.txt").unlink()
    r3 = run_experiment(cfg_path, out=out, notebooks_dir=nb_dir)
    assert r3.executed == ["03_transfer-scratch"]

    # --force: a new run id, the earlier run untouched.
    r4 = run_experiment(cfg_path, out=out, notebooks_dir=nb_dir, force=True, only=["01_data"])
    assert r4.run_dir != r1.run_dir and r4.executed == ["01_data"]
    assert (r1.run_dir / "index.html").is_file() and _executions(r1.run_dir).count("01_data") == 1

    # Another config (smoke) never reuses the run of the first.
    r5 = run_experiment(cfg_path, out=out, notebooks_dir=nb_dir, smoke=True, only=["01_data"])
    assert r5.run_dir not in (r1.run_dir, r4.run_dir) and r5.executed == ["01_data"]


def test_failed_notebook_stops_run_and_keeps_partial(fake, capsys):
    nb_dir, cfg_path, out = fake
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["fail_at"] = "03_transfer-scratch"
    cfg_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(RunFailed) as info:
        run_experiment(cfg_path, out=out, notebooks_dir=nb_dir)
    exc = info.value
    assert exc.stage_id == "03_transfer-scratch"
    assert "ValueError" in str(exc) and "planned failure" in str(exc)
    assert "Cell In[" in str(exc) and "---->" in str(exc)  # where in the notebook it failed
    assert exc.notebook.is_file() and exc.notebook.with_suffix(".html").is_file()
    ran = _executions(exc.run_dir)
    assert ran[-1] == exc.stage_id and "04_cross_validation" not in ran
    run = json.loads((exc.run_dir / "run.json").read_text())
    assert run["status"] == "failed" and run["stages"][exc.stage_id]["status"] == "failed"
    index = (exc.run_dir / "index.html").read_text()
    assert "planned failure" in index and 'id="failure"' in index

    # Fix the config's cause by running with the failing stage's notebook fixed: here we
    # rerun after removing the planned failure from the *notebook* (same config hash), so
    # the run resumes: finished stages skipped, the failed attempt kept aside.
    for name in ("03_transfer.ipynb",):
        nb = nbformat.read(str(nb_dir / name), as_version=4)
        nb.cells[2].source = nb.cells[2].source.replace('raise ValueError', 'print')
        nbformat.write(nb, str(nb_dir / name))
    result = run_experiment(cfg_path, out=out, notebooks_dir=nb_dir)
    assert result.run_dir == exc.run_dir
    assert "01_data" in result.skipped and "02_source_pretraining" in result.skipped
    assert exc.stage_id in result.executed
    attempts = list((exc.run_dir / "stages" / ".attempts").iterdir())
    assert any(a.name.startswith(exc.stage_id) for a in attempts)


def test_a_bad_second_experiment_prepares_no_run_of_the_first(fake):
    """``cxr demo`` checks every experiment (plan, notebooks, --data) before making any run folder."""
    from cxrlib.report.runner import run_experiments

    nb_dir, cfg_path, out = fake
    cfg = yaml.safe_load(cfg_path.read_text())
    real = cfg_path.with_name("toy_real.yaml")
    real.write_text(yaml.safe_dump({**cfg, "name": "toy_real", "data": {"kind": "real"}}))
    with pytest.raises(ValueError, match=r"toy_real: data.kind is 'real': give the datasets' root"):
        run_experiments([cfg_path, real], out=out, notebooks_dir=nb_dir)
    assert not out.exists() or not any(out.iterdir())  # the first experiment's run was not prepared

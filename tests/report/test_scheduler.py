"""The scheduler without notebooks: shared slots across runs, critical-path order, fold resume."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cxrlib.report import layout
from cxrlib.report.plan import Stage
from cxrlib.report.progress import Progress
from cxrlib.report.scheduler import Scheduler, chain_weights, run_many


def _plan(prefix: str, weights: dict[str, float], depends: dict[str, tuple[str, ...]]) -> list[Stage]:
    return [Stage(f"{prefix}{sid}", "x", "nb.ipynb", depends=tuple(f"{prefix}{d}" for d in depends.get(sid, ())),
                  weight=w) for sid, w in weights.items()]


class _Recorder:
    """A stand-in for execute_stage: sleeps, and records start order and concurrency."""

    def __init__(self, seconds: float = 0.05):
        self.seconds, self.lock = seconds, threading.Lock()
        self.running = self.peak = 0
        self.started: list[str] = []

    def __call__(self, stage, run_dir, params, notebooks_dir, processes=None):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.started.append(stage.id)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return run_dir


def _scheduler(tmp_path: Path, name: str, plan: list[Stage], execute) -> Scheduler:
    run_dir = tmp_path / name
    run_dir.mkdir()
    info = {"stages": {}}
    return Scheduler(plan, run_dir, info, {s.id: "h" for s in plan}, lambda s: {}, tmp_path,
                     Progress({s.id: s.weight for s in plan}, stream=open(run_dir / "log", "w")),
                     execute=execute, force=True)


def test_chain_weight_is_the_heaviest_path_to_the_end():
    plan = _plan("", {"data": 1, "source": 10, "scratch": 5, "twice": 5, "summary": 1},
                 {"source": ("data",), "scratch": ("data",), "twice": ("source",), "summary": ("scratch", "twice")})
    w = chain_weights(plan)
    assert w["summary"] == 1 and w["twice"] == 6 and w["scratch"] == 6
    assert w["source"] == 16 and w["data"] == 17  # data -> source -> twice -> summary


def test_two_runs_share_the_slots_and_the_longest_chain_starts_first(tmp_path: Path):
    rec = _Recorder()
    a = _plan("a:", {"data": 1, "source": 10, "scratch": 5, "twice": 5, "end": 1},
              {"source": ("data",), "scratch": ("data",), "twice": ("source",), "end": ("scratch", "twice")})
    b = _plan("b:", {"data": 1, "train": 3, "end": 1}, {"train": ("data",), "end": ("train",)})
    sa, sb = _scheduler(tmp_path, "a", a, rec), _scheduler(tmp_path, "b", b, rec)
    run_many([sa, sb], jobs=2)
    assert rec.peak == 2  # never more than the shared slots, and both used
    assert sorted(rec.started) == sorted(s.id for s in a + b)
    assert rec.started[:2] == ["a:data", "b:data"]  # a's chain (17) is heavier than b's (5)
    i = rec.started.index
    assert i("a:source") < i("a:scratch")  # on the critical path: source before scratch
    for sch, plan in ((sa, a), (sb, b)):
        assert set(sch.done) == {s.id for s in plan}
        order = [s for s in rec.started if s in sch.done]
        for s in plan:  # every stage after its dependencies
            assert all(order.index(d) < order.index(s.id) for d in s.depends)


def test_one_slot_runs_one_notebook_at_a_time(tmp_path: Path):
    rec = _Recorder(0.01)
    sa = _scheduler(tmp_path, "a", _plan("a:", {"x": 1, "y": 1}, {}), rec)
    sb = _scheduler(tmp_path, "b", _plan("b:", {"x": 1, "y": 1}, {}), rec)
    run_many([sa, sb], jobs=1)
    assert rec.peak == 1 and len(rec.started) == 4


def test_a_failure_stops_only_its_own_run(tmp_path: Path):
    def execute(stage, run_dir, params, notebooks_dir, processes=None):
        if stage.id == "a:x":
            raise RuntimeError("planned")
        return run_dir

    sa = _scheduler(tmp_path, "a", _plan("a:", {"x": 1, "y": 1}, {"y": ("x",)}), execute)
    sb = _scheduler(tmp_path, "b", _plan("b:", {"x": 1, "y": 1}, {"y": ("x",)}), execute)
    run_many([sa, sb], jobs=2)
    assert [s.id for s, _ in sa.failures] == ["a:x"] and "a:y" not in sa.done
    assert sb.done == {"b:x", "b:y"}


def test_finished_folds_of_an_unfinished_attempt_are_restored(tmp_path: Path):
    run = tmp_path / "run"
    sdir = layout.stage_dir(run, "03_transfer-scratch")
    for fold, finished in ((0, True), (1, True), (2, False)):
        d = sdir / f"fold{fold}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        if finished:
            (d / "metrics.json").write_text("{}")
    (sdir / "figures").mkdir()
    attempt = layout.keep_aside(sdir, layout.notebook_path(run, "03_transfer-scratch"), run)
    sdir.mkdir()
    assert layout.restore_finished_folds(attempt, sdir) == ["fold0", "fold1"]
    assert sorted(p.name for p in sdir.iterdir()) == ["fold0", "fold1"]
    assert (attempt / "outputs" / "fold2" / "config.json").is_file()  # the unfinished fold stays aside
    assert layout.restore_finished_folds(None, sdir) == []


def test_a_fold_set_aside_keeps_its_stage_and_fold_in_the_name(tmp_path: Path):
    run = tmp_path / "run"
    fold = layout.stage_dir(run, "03_transfer-twice") / "fold1"
    fold.mkdir(parents=True)
    (fold / "metrics.json").write_text("{}")
    dest = layout.set_aside_fold(fold, run)
    assert not fold.exists() and (dest / "metrics.json").is_file()
    assert dest.parent == run / "stages" / ".attempts" and dest.name.startswith("03_transfer-twice-fold1-")


def test_train_folds_reads_finished_folds_and_retrains_a_stale_one(tmp_path: Path, monkeypatch):
    """notebook 3's loop: a fold whose finished stage has other settings is set aside, then retrained."""
    import cxrlib.experiment
    import cxrlib.report.datastage
    from cxrlib.report.config import load_experiment
    from cxrlib.report.locate import packaged_experiments_dir
    from cxrlib.report.notebook import StageContext
    from cxrlib.report.plan import build_plan
    from cxrlib.report.transfer import train_folds

    cfg = load_experiment(packaged_experiments_dir() / "paper_b.yaml", smoke=True)
    stage = next(s for s in build_plan(cfg) if s.id == "03_transfer-twice")
    run = tmp_path / "run"
    ctx = StageContext(cfg, run, layout.stage_dir(run, stage.id), stage)
    (ctx.stage_dir / "fold1").mkdir(parents=True)
    (ctx.stage_dir / "fold1" / "stale").write_text("trained with other settings")
    calls = []

    def fake_run(method, manifest, stage_dir, fold=None, **kw):
        calls.append((Path(stage_dir).name, fold))
        if (Path(stage_dir) / "stale").is_file():
            raise FileExistsError(f"{stage_dir} holds a finished stage with a different config")
        return {"test": {"accuracy": 0.5, "macro_f1": 0.4}, "best_epoch": 1, "train_seconds": 0.1}

    monkeypatch.setattr(cxrlib.experiment, "run_target_stage", fake_run)
    monkeypatch.setattr(cxrlib.report.datastage, "load_data_info", lambda run_dir: {"root": str(tmp_path)})
    lines: list[str] = []
    out = train_folds(ctx, "twice", [0, 1], log=lines.append)
    assert sorted(out) == [0, 1] and calls == [("fold0", 0), ("fold1", 1), ("fold1", 1)]
    aside = list((run / "stages" / ".attempts").iterdir())
    assert len(aside) == 1 and (aside[0] / "stale").is_file()
    assert any("other settings" in line for line in lines)

"""Phantom acceptance run of the transfer strategies through the same plan as ``cxr run`` (not a timed test).

Loads an experiment (default ``paper_a``; ``--experiment paper_b`` for twice transfer and output
neuron keeping), applies ``--set`` overrides and a ``--strategies`` subset, and runs its stages up
to ``04_cross_validation`` with :func:`cxrlib.report.runner.run_experiment` -- the data stage,
the source stage and one transfer notebook per strategy (a loop over folds), exactly as ``cxr run`` does.
It then prints, from the run folder, the validation macro-F1 of every epoch per strategy, the
test metrics (mean ± std over folds), McNemar tests and the training time per stage, all computed
by :mod:`cxrlib.comparison`.

    .venv/bin/python benchmarks/bench_training.py --out /tmp/cxr_bench
    .venv/bin/python benchmarks/bench_training.py --experiment paper_b --set transfer.train.epochs=4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cxrlib._text import parse_key_values
from cxrlib.comparison import paired_mcnemar, summarize
from cxrlib.report import results
from cxrlib.report.config import load_experiment
from cxrlib.report.plan import fits
from cxrlib.report.locate import resolve_experiment
from cxrlib.report.runner import run_experiment


def run_through_plan(experiment: str, out: Path, sets: list[str] | None, strategies: str | None,
                     data_root: str | None = None, jobs: int = 1):
    """Run an experiment's stages up to the strategy comparison; returns (run folder, config)."""
    cfg = load_experiment(resolve_experiment(experiment), overrides=parse_key_values(sets, "--set"))
    if strategies:
        keep = strategies.split(",")
        unknown = sorted(set(keep) - set(cfg["strategies"]))
        if unknown:
            raise SystemExit(f"--strategies: {unknown} not in {sorted(cfg['strategies'])}")
        cfg["strategies"] = {k: v for k, v in cfg["strategies"].items() if k in keep}
    cfg.pop("heatmaps", None)  # not needed for the comparison
    result = run_experiment(cfg, out=out, data_root=data_root, only=["04_cross_validation"], jobs=jobs)
    return result.run_dir, cfg


def report(run_dir: Path, cfg) -> None:
    """Print per-epoch curves, test metrics, McNemar and timings of a run folder."""
    curves = results.gather_histories(run_dir, cfg)
    table = curves.pivot_table(index="epoch", columns="strategy", values="val_macro_f1", aggfunc="mean")
    print("\nvalidation macro-F1 per epoch (mean over folds):")
    print(table[[s for s in cfg["strategies"]]].round(3).to_string())
    summary = summarize(results.collect_metrics(run_dir, cfg))
    print("\ntest metrics (mean ± std over folds):")
    print(summary[summary["metric"].isin(["accuracy", "macro_f1", "macro_auc_ovr"])]
          .pivot(index="strategy", columns="metric", values="text").to_string())
    print("\nMcNemar (exact binomial) on the same test images:")
    mcn = paired_mcnemar(results.gather_predictions(run_dir, cfg))
    print(mcn[["a", "b", "n", "a_only_correct", "b_only_correct", "p_value"]].to_string(index=False))
    info = json.loads((run_dir / "run.json").read_text())
    for sid, rec in info["stages"].items():
        print(f"{sid}: {rec.get('status')} {rec.get('seconds', '')} s")
    for fit in fits(cfg):  # what each fold's model started from
        m = fit.path(run_dir) / "metrics.json"
        init = json.loads(m.read_text()).get("init", {}) if m.is_file() else {}
        print(f"  {fit.rel}: init={init.get('init')} kept={init.get('kept_neurons')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="paper_a", help="name or YAML path (as `cxr run`)")
    ap.add_argument("--out", default="/tmp/cxr_bench_training")
    ap.add_argument("--strategies", help="comma-separated subset of the experiment's strategies")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (as `cxr run --set`)")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.time()
    run_dir, cfg = run_through_plan(args.experiment, Path(args.out), args.set, args.strategies, jobs=args.jobs)
    report(run_dir, cfg)
    print(f"\nrun {run_dir}: {time.time() - t0:.0f} s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU of a notebook's fold loop: pixels reused across folds + vectorised bootstrap vs the earlier code.

A ``03_transfer`` notebook trains one strategy on every fold in one process. Since this round a
memory cache takes the pixels an earlier fold decoded (``cxrlib.data.cache``, keyed by file and
geometry) and ``cxrlib.evaluation.bootstrap_ci`` computes accuracy and macro-F1 intervals from
per-resample confusion counts. The baseline, measured in the same run on the same folds, switches
both off (``DECODED_LIMIT = 0``: nothing kept; the per-resample scikit-learn loop). Each variant
runs in a fresh process (the kept pixels live per process), the variants alternating per repeat.
Give a finished run's folder (``cxr demo`` or ``cxr run paper_b``):

    python benchmarks/bench_fold_overhead.py reports/paper_b/latest --strategy imagenet --repeats 2

Prints CPU seconds per fold (``run_target_stage``, training included) for both variants and the
ratio new / baseline of the folds after the first (the first fold decodes in both) and of all folds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _fold_cpu(run_dir: Path, strategy: str, baseline: bool) -> list[float]:
    """CPU seconds of each fold of ``strategy``, trained one after the other in this process."""
    import yaml

    from cxrlib import evaluation
    from cxrlib.data import cache
    from cxrlib.experiment import run_target_stage
    from cxrlib.report.datastage import load_data_info
    from cxrlib.report.notebook import StageContext
    from cxrlib.report.plan import build_plan, fold_ids

    if baseline:
        cache.DECODED_LIMIT = 0
        evaluation._FROM_CONFUSION.clear()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    stage = next(s for s in build_plan(cfg) if s.id == f"03_transfer-{strategy}")
    ctx = StageContext(cfg, run_dir, run_dir / "stages" / "bench", stage)
    options = ctx.stage_options("transfer", strategy)
    root = load_data_info(run_dir)["root"]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for fold in fold_ids(cfg):
            t0 = os.times()
            run_target_stage(strategy, str(run_dir / "stages" / "01_data" / "target.csv"), Path(tmp) / str(fold),
                             fold=fold, root=root, task=cfg["task"], name=strategy, **options)
            t1 = os.times()
            out.append((t1.user + t1.system) - (t0.user + t0.system))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--strategy", default="imagenet")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--child", choices=["new", "baseline"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if args.child:
        print(json.dumps(_fold_cpu(run_dir, args.strategy, args.child == "baseline")))
        return 0
    runs: dict[str, list[list[float]]] = {"baseline": [], "new": []}
    for _ in range(args.repeats):
        for variant in ("baseline", "new"):
            proc = subprocess.run([sys.executable, __file__, str(run_dir), "--strategy", args.strategy,
                                   "--child", variant], capture_output=True, text=True, check=True)
            runs[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for variant, folds in runs.items():
        print(f"{variant:8s} CPU-s per fold: " + " | ".join(" ".join(f"{c:.2f}" for c in r) for r in folds))
    later = {v: sum(sum(r[1:]) for r in folds) for v, folds in runs.items()}
    total = {v: sum(sum(r) for r in folds) for v, folds in runs.items()}
    print(f"ratio new / baseline: folds after the first {later['new'] / later['baseline']:.2f}x, "
          f"all folds {total['new'] / total['baseline']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

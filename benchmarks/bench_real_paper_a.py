"""Paper A (Basu et al. 2020) 4-class setting on the real sample data, through the plan of ``cxr run``.

Runs ``paper_a_real`` (NIH + Cohen + Figure 1 under --data; patient-grouped 5-fold CV, the source
stage without any target patient) up to ``04_cross_validation`` with
:func:`cxrlib.report.runner.run_experiment`, at low resolution on CPU by default, and prints
mean ± std over folds and McNemar tests (:mod:`cxrlib.comparison`). ``--set`` changes any key.

    .venv/bin/python benchmarks/bench_real_paper_a.py --data ../shared/data --out /tmp/cxr_real_a
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import report, run_through_plan  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CPU_DEFAULTS = ["stage.image_size=64", "source.train.epochs=3", "transfer.train.epochs=3",
                "source.train.tensorboard=false", "transfer.train.tensorboard=false"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default="/tmp/cxr_real_paper_a")
    ap.add_argument("--strategies", default="scratch,domain_extension")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help=f"config override; applied after the CPU defaults {CPU_DEFAULTS}")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.time()
    run_dir, cfg = run_through_plan("paper_a_real", Path(args.out), CPU_DEFAULTS + (args.set or []),
                                    args.strategies, data_root=args.data, jobs=args.jobs)
    report(run_dir, cfg)
    print(f"wall: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Phantom acceptance run of the transfer strategies (not a timed test).

Generates source (14 NIH findings) and target phantoms with cxrlib.data.phantoms, then runs
the strategy variants (default: scratch, domain_extension, twice without ImageNet, twice +
output neuron keeping) with a compact DenseNet on the same target split, and prints the
validation macro-F1 of every epoch per strategy, the test metrics, McNemar tests and the
training throughput. Everything is written under --out (stage dirs, comparison/).

    .venv/bin/python benchmarks/bench_training.py --out /tmp/cxr_bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from cxrlib import experiment
from cxrlib.data.phantoms import generate_phantoms


def _phantoms(folder: Path, task: str, n: int, seed: int, size: int) -> Path:
    """Generate phantoms once per (task, n, size, seed); reuse them on later runs."""
    if (folder / "manifest.csv").is_file():
        return folder / "manifest.csv"
    return generate_phantoms(folder, task, n, seed=seed, image_size=size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/cxr_bench_training")
    ap.add_argument("--task", default="paper_a")
    ap.add_argument("--strategies", default="scratch,domain_extension,twice,twice_onk")
    ap.add_argument("--n-source", type=int, default=600)
    ap.add_argument("--n-target", type=int, default=360)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="compact_densenet")
    ap.add_argument("--source-epochs", type=int, default=4)
    ap.add_argument("--target-epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=0, help="k-fold CV with k folds (0: one hold-out split)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    t0 = time.time()
    src = _phantoms(out / f"phantoms_source_{args.n_source}_{args.size}_{args.seed}", "source", args.n_source,
                    args.seed + 1, args.size)
    tgt = _phantoms(out / f"phantoms_{args.task}_{args.n_target}_{args.size}_{args.seed}", args.task,
                    args.n_target, args.seed + 2, args.size)
    print(f"phantoms ready in {time.time() - t0:.1f} s")
    stage = {"backbone": args.backbone, "image_size": args.size, "batch_size": 32, "cache": "memory",
             "bootstrap": 200, "split_seed": args.seed}
    common_train = {"lr": args.lr, "early_stopping": 0, "tensorboard": False, "verbose": 0, "seed": args.seed}
    target = {**stage, "task": args.task, "manifest": str(tgt),
              "train": {**common_train, "epochs": args.target_epochs, "monitor": "val_macro_f1"}}
    source = {**stage, "manifest": str(src),
              "train": {**common_train, "epochs": args.source_epochs, "monitor": "val_loss"}}
    t0 = time.time()
    dirs = experiment.run_strategies(args.strategies.split(","), target, source, out / "runs",
                                     cv=args.folds > 0, k=max(args.folds, 2))
    seconds = time.time() - t0
    res = experiment.compare_strategies(dirs, out / "comparison")

    curves = res["learning_curves"]
    table = curves.pivot_table(index="epoch", columns="strategy", values="val_macro_f1", aggfunc="mean")
    print("\nvalidation macro-F1 per epoch (mean over folds):")
    print(table[[s for s in dirs]].round(3).to_string())
    comp = res["comparison"]
    print("\ntest metrics:")
    print(comp[comp["metric"].isin(["accuracy", "macro_f1", "macro_auc_ovr"])]
          .pivot(index="strategy", columns="metric", values="text").to_string())
    print("\nMcNemar (exact binomial) on the same test images:")
    print(res["mcnemar"][["a", "b", "n", "a_only_correct", "b_only_correct", "p_value"]].to_string(index=False))
    for name, d in dirs.items():
        m = json.loads(((d / "fold0" if args.folds else d) / "metrics.json").read_text())
        print(f"{name}: init={m['init'].get('init')} kept={m['init'].get('kept_neurons')} "
              f"train_seconds={m['train_seconds']} n={m['n']}")
    for p in sorted((out / "runs").glob("source_*")):
        m = json.loads((p / "metrics.json").read_text())
        print(f"{p.name}: init={m['init'].get('init')} train_seconds={m['train_seconds']} "
              f"test={ {k: round(v, 3) for k, v in m['test'].items() if k in ('accuracy', 'macro_f1', 'macro_auroc')} }")
    print(f"\nall strategies: {seconds:.0f} s wall")
    table.to_csv(out / "comparison" / "val_macro_f1_per_epoch.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

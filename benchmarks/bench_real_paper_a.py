"""Paper A (Basu et al. 2020) 4-class setting on the real sample data, patient-grouped 5-fold CV.

Target: data_manifests/paper_a.csv (Cohen + Figure 1 COVID-19; NIH normal / pneumonia / other
disease; deduplicated, folds by patient), subsampled class-stratified to --n-target images.
Source (domain extension): data_manifests/source_nih14.csv minus every patient of the target
subsample (no target patient is seen in pre-training), grouped normal / disease as in paper A.
Runs scratch and domain_extension at low resolution on CPU and prints mean ± std over folds.

    .venv/bin/python benchmarks/bench_real_paper_a.py --data ../shared/data --out /tmp/cxr_real_a
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cxrlib import experiment
from cxrlib.data.manifest import read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default="/tmp/cxr_real_paper_a")
    ap.add_argument("--n-target", type=int, default=600)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="compact_densenet")
    ap.add_argument("--source-epochs", type=int, default=3)
    ap.add_argument("--target-epochs", type=int, default=3)
    ap.add_argument("--strategies", default="scratch,domain_extension")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = read_manifest(REPO / "data_manifests" / "paper_a.csv")
    if len(target) > args.n_target:
        target = (target.groupby("label", group_keys=False)
                  .sample(frac=args.n_target / len(target), random_state=0).sort_index())
    write_manifest(target, out / "target.csv")
    print("target images per class:", target["label"].value_counts().to_dict(),
          "| per fold:", target["fold"].value_counts().sort_index().to_dict())

    stage = {"backbone": args.backbone, "image_size": args.size, "batch_size": 32, "cache": "memory",
             "bootstrap": 200, "root": args.data}
    train = {"lr": 1e-3, "early_stopping": 0, "tensorboard": False, "verbose": 0}
    t0 = time.time()
    dirs = experiment.run_strategies(
        args.strategies.split(","),
        {**stage, "task": "paper_a", "manifest": str(out / "target.csv"),
         "train": {**train, "epochs": args.target_epochs, "monitor": "val_macro_f1"}},
        {**stage, "manifest": str(REPO / "data_manifests" / "source_nih14.csv"),
         "exclude_patients_of": str(out / "target.csv"),
         "train": {**train, "epochs": args.source_epochs, "monitor": "val_loss"}},
        out / "runs", cv=True, k=5)
    res = experiment.compare_strategies(dirs, out / "comparison")
    comp = res["comparison"]
    print(comp[comp["metric"].isin(["accuracy", "macro_f1", "macro_auc_ovr", "sensitivity_covid19"])]
          .pivot(index="strategy", columns="metric", values="text").to_string())
    print(res["mcnemar"][["a", "b", "n", "a_only_correct", "b_only_correct", "p_value"]].to_string(index=False))
    print(f"wall: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Do the heatmaps land on the phantom lesions? Grad-CAM per layer resolution, LRP, vs chance.

Trains (or reuses) one paper-B target stage on phantoms through ``cxrlib.experiment``, then for
the test images with a lesion:

1. a lesion-removal check: each lesion (mask dilated by 2 px) is filled with the mean of a 3-px
   ring around it; the drop in true-class probability and accuracy says how much the model
   uses the lesions at all (a model that does not cannot have heatmaps that land);
2. ``mass_inside``, ``pointing_game`` and ``auc`` against the masks (``cxrlib.explain.scoring``)
   for Grad-CAM at the last layer and at ``min_cam_size`` 4 / 8 / 16, Grad-CAM++, LRP-epsilon
   and LRP-alpha1-beta0 (true class explained), with chance and score / chance.

Usage::

    python benchmarks/heatmap_localisation.py --out /tmp/loc64 --size 64 --epochs 12
    python benchmarks/heatmap_localisation.py --out /tmp/loc128 --size 128 --epochs 12
    python benchmarks/heatmap_localisation.py --out /tmp/loc64aug --size 64 --epochs 30 --augment
    python benchmarks/heatmap_localisation.py --out /tmp/loc48 --size 48 --epochs 4 --n 240 \
        --conspicuity 4 --predicted --methods gradcam@4,lrp.alpha_1_beta_0   # the quick demo's data

A scratch model at the demo's 4 epochs barely learns (48 px, conspicuity 2.5: accuracy 0.31 on
the lesion images, 2 shared cores, load 7); the demo's transferred models are what notebook 5
explains (``cxrlib/explain/gradcam.py`` gives their figures).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SPECS = (("gradcam", {}), ("gradcam", {"min_cam_size": 4}), ("gradcam", {"min_cam_size": 8}),
         ("gradcam", {"min_cam_size": 16}), ("gradcam++", {"min_cam_size": 4}), ("gradcam++", {"min_cam_size": 8}),
         ("lrp.epsilon", {}), ("lrp.alpha_1_beta_0", {}))


def train(out: Path, size: int, epochs: int, augment: bool, n: int, seed: int, task: str = "paper_b",
          conspicuity: float = 1.0) -> tuple[Path, Path]:
    """Phantoms + one scratch target stage (resumed when it exists); returns (stage, data root)."""
    from cxrlib import experiment
    from cxrlib.data.phantoms import generate_phantoms

    root = out / "data"
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        manifest = generate_phantoms(root, task, n=n, seed=seed, image_size=size, conspicuity=conspicuity)
    stage = {"backbone": "compact_densenet", "image_size": size, "batch_size": 32, "bootstrap": 0,
             "task": task, "augment": augment,
             "train": {"epochs": epochs, "lr": 0.001, "monitor": "val_macro_f1", "early_stopping": 0,
                       "tensorboard": False, "verbose": 2}}
    experiment.run_target_stage("scratch", str(manifest), out / "scratch", **stage)
    return out / "scratch", root


def lesion_removal(model, x: np.ndarray, masks: np.ndarray, y: np.ndarray) -> dict:
    """True-class probability and accuracy with the lesions filled by their surroundings."""
    from scipy.ndimage import binary_dilation

    filled = x.copy()  # [N, H, W, C]
    for i, m in enumerate(masks):
        big = binary_dilation(m, iterations=2)  # [H, W] lesion and its soft edge
        ring = binary_dilation(big, iterations=3) & ~big
        filled[i][big] = x[i][ring].mean(axis=0)
    p, q = model.predict(x, verbose=0), model.predict(filled, verbose=0)  # [N, K]
    k = np.arange(len(y))
    return {"prob_intact": p[k, y].mean(), "prob_filled": q[k, y].mean(),
            "acc_intact": (p.argmax(1) == y).mean(), "acc_filled": (q.argmax(1) == y).mean()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--n", type=int, default=360)
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--predicted", action="store_true", help="explain the predicted class (as notebook 5 does)")
    ap.add_argument("--task", default="paper_b", choices=["paper_a", "paper_b"])
    ap.add_argument("--conspicuity", type=float, default=1.0, help="phantom lesion contrast multiplier")
    ap.add_argument("--methods", default=",".join(f"{m}@{o.get('min_cam_size', '')}" for m, o in SPECS),
                    help="comma-separated method[@min_cam_size] list")
    args = ap.parse_args(argv)

    from cxrlib.data.manifest import read_manifest
    from cxrlib.data.pipeline import load_images
    from cxrlib.data.taxonomy import task_classes
    from cxrlib.explain.factory import ExplainerCache
    from cxrlib.explain.scoring import load_masks, localisation_summary, score_heatmaps
    from cxrlib.models import load_model

    specs = [(m, {"min_cam_size": int(c)} if c else {}) for m, _, c in (s.partition("@") for s in args.methods.split(","))]
    classes = list(task_classes(args.task))
    stage, root = train(args.out, args.size, args.epochs, args.augment, args.n, args.seed, args.task, args.conspicuity)
    test = pd.read_csv(stage / "predictions.csv")["path"]
    rows = read_manifest(root / "manifest.csv").set_index("path").loc[test].reset_index()
    rows = rows[rows["label"] != "normal"].reset_index(drop=True)  # images with a lesion
    x = load_images(rows, root, args.size, channels=3, backbone="compact_densenet")  # [N, S, S, 3]
    masks = load_masks(rows, root, args.size)  # [N, S, S] bool
    y = rows["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    model = load_model(stage / "model.h5")
    print(f"{args.size} px, {args.epochs} epochs{' + augmentation' if args.augment else ''}: "
          f"{len(rows)} test images with a lesion, mean mask share {masks.mean():.3f}")
    print("lesion removal:", {k: round(float(v), 3) for k, v in lesion_removal(model, x, masks, y).items()})
    parts = []
    for method, opts in specs:
        with ExplainerCache(**opts) as cache:
            ex = cache.get(stage, method)
            h = ex.explain(x, None if args.predicted else y)  # predicted or true class
            name = method
            if hasattr(ex, "layer"):
                name += f" {ex.layer} ({model.get_layer(ex.layer).output.shape[1]} px)"
            parts.append(score_heatmaps(h.maps, masks, rows["path"].tolist(), name))
    summary = localisation_summary(pd.concat(parts, ignore_index=True))
    table = summary.pivot_table(index="method", columns="metric", values=["mean", "x_chance"])
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

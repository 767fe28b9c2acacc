"""CPU per heatmap overlay PNG: cxrlib's Pillow composite vs a matplotlib three-panel figure.

Notebook 5 writes one overlay per explained image, model and method (about 300 in the quick
demo). The baseline is the matplotlib figure cxrlib drew before (three ``imshow`` panels, a
colour bar, ``savefig`` at 80 dpi), measured in the same process on the same maps.

    python benchmarks/bench_overlay.py --n 30 --size 48
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def matplotlib_overlay(image: np.ndarray, heat: np.ndarray, out: Path, title: str = "") -> None:
    """The baseline: the matplotlib figure of cxrlib's earlier ``save_overlay``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = float(np.abs(heat).max()) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4), constrained_layout=True)
    axes[0].imshow(image, cmap="gray")
    im = axes[1].imshow(heat, cmap="bwr", vmin=-lim, vmax=lim)
    axes[2].imshow(image, cmap="gray")
    axes[2].imshow(heat, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.45)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(out, dpi=80, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    from cxrlib.explain.batch import save_overlay

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="overlays per variant")
    ap.add_argument("--size", type=int, default=48, help="map side in pixels")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.random((args.n, args.size, args.size)) * 255  # [N, H, W]
    maps = rng.normal(size=(args.n, args.size, args.size))      # [N, H, W] signed relevance
    out = Path(tempfile.mkdtemp())
    cpu = {}
    for name, fn in (("matplotlib figure", matplotlib_overlay), ("cxrlib save_overlay", save_overlay)):
        fn(images[0], maps[0], out / "warm.png", "warm-up")
        t = time.process_time()
        for i in range(args.n):
            fn(images[i], maps[i], out / f"{name[:3]}{i}.png", f"image {i}")
        cpu[name] = (time.process_time() - t) / args.n
        print(f"{name:<22} {cpu[name] * 1000:7.1f} ms CPU per overlay")
    print(f"ratio cxrlib / matplotlib: {cpu['cxrlib save_overlay'] / cpu['matplotlib figure']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Make the tiny torchvision-layout DenseNet fixtures and their PyTorch reference logits.

Run once (needs torch; the tests themselves do not):

    .venv/bin/python tests/weights/make_fixture.py

Writes into tests/weights/fixtures/:

- ``densenet_tiny_rgb14.pt``: zip format (PyTorch >= 1.6), ``{"state_dict": ..., "epoch": 1}``
  with DataParallel ``module.`` prefixes; 3-channel stem, 14 outputs.
- ``densenet_tiny_gray14_legacy.pt``: legacy (pre-1.6) format holding a whole pickled model
  ``{"model": net, "epoch": 1}`` as jrzech/reproduce-chexnet does; 1-channel stem, 14 outputs.
- ``reference.npz``: for each, fixed inputs ``x_<name>`` [2, 48, 48, C] (already normalised)
  and PyTorch's logits ``logits_<name>`` [2, 14].

Architecture: growth rate 4, blocks (1, 2, 2, 1), 8-filter stem, bottleneck 4 x growth (a
DenseNet-BC like DenseNet121, only smaller). Weights and BatchNorm statistics are random
(:func:`cxrlib.weights.torch_reference.randomise`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cxrlib.weights.densenet import DenseNetSpec
from cxrlib.weights.torch_reference import random_checkpoint

OUT = Path(__file__).parent / "fixtures"
SIZE = 48
FIXTURES = {
    "rgb14": ("densenet_tiny_rgb14.pt", 3, False, "state_dict"),
    "gray14": ("densenet_tiny_gray14_legacy.pt", 1, True, "model"),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (name, (file, channels, legacy, wrap)) in enumerate(FIXTURES.items()):
        spec = DenseNetSpec(blocks=(1, 2, 2, 1), growth_rate=4, init_features=8, bn_size=4,
                            in_channels=channels, n_classes=14)
        net = random_checkpoint(OUT / file, spec, seed=10 + i, legacy=legacy, wrap=wrap)
        if wrap == "state_dict":  # DataParallel prefixes, as multi-GPU training scripts save them
            sd = torch.load(OUT / file, weights_only=False)
            sd["state_dict"] = {f"module.{k}": v for k, v in sd["state_dict"].items()}
            torch.save(sd, OUT / file)
        x = np.random.default_rng(i).standard_normal((2, SIZE, SIZE, channels)).astype(np.float32)
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
        arrays[f"x_{name}"], arrays[f"logits_{name}"] = x, logits
        print(f"{file}: {(OUT / file).stat().st_size} bytes, logits {logits.shape}, "
              f"max |logit| {np.abs(logits).max():.3f}")
    np.savez_compressed(OUT / "reference.npz", **arrays)


if __name__ == "__main__":
    main()

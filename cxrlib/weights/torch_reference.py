"""PyTorch reference DenseNet in torchvision's layout (needs the optional ``torch`` extra).

Used by ``cxr weights verify`` and by ``tests/weights/make_fixture.py`` to compute reference
outputs. The module names (``features.conv0``, ``features.denseblock1.denselayer1.norm1``,
``features.transition1.conv``, ``features.norm5``, ``classifier``) and the forward pass
(``relu(features) -> adaptive_avg_pool -> flatten -> classifier``) are those of
``torchvision.models.DenseNet`` (Huang et al. 2017; torchvision's implementation), so a
torchvision state dict loads with ``strict=True``; torchvision itself is not needed.

API: ``torch_densenet(spec) -> torch.nn.Module``, ``torch_logits(state_dict, spec, x_nhwc)``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from cxrlib.weights.densenet import DenseNetSpec


try:  # optional: cxrlib[torch]
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - depends on the environment
    torch = nn = None


def _import_torch():
    if torch is None:
        raise ImportError("PyTorch is needed for this (pip install 'cxrlib[torch]'; on a CPU "
                          "machine pick the CPU wheel, e.g. torch==2.13.0+cpu)")
    return torch


if torch is not None:
    # Module-level classes (not closures) so that a whole model can be pickled by torch.save.
    class DenseLayer(nn.Module):
        """torchvision ``_DenseLayer``: BN-ReLU-conv1x1 (bn_size*k) -BN-ReLU-conv3x3 (k), concat."""

        def __init__(self, c_in: int, growth_rate: int, bn_size: int):
            super().__init__()
            width = bn_size * growth_rate
            self.norm1 = nn.BatchNorm2d(c_in)
            self.relu1 = nn.ReLU()
            self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(width)
            self.relu2 = nn.ReLU()
            self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)

        def forward(self, x):  # [B, c, h, w] -> [B, c + k, h, w]
            y = self.conv1(self.relu1(self.norm1(x)))
            y = self.conv2(self.relu2(self.norm2(y)))
            return torch.cat([x, y], 1)

    class DenseNet(nn.Module):
        """torchvision ``DenseNet`` (features + classifier; logits out)."""

        def __init__(self, spec: DenseNetSpec):
            super().__init__()
            f = spec.init_features
            self.features = nn.Sequential(OrderedDict(
                conv0=nn.Conv2d(spec.in_channels, f, 7, stride=2, padding=3, bias=False),
                norm0=nn.BatchNorm2d(f), relu0=nn.ReLU(), pool0=nn.MaxPool2d(3, 2, padding=1)))
            for i, n in enumerate(spec.blocks):
                block = nn.Sequential()
                for j in range(n):
                    block.add_module(f"denselayer{j + 1}",
                                     DenseLayer(f + j * spec.growth_rate, spec.growth_rate, spec.bn_size))
                self.features.add_module(f"denseblock{i + 1}", block)
                f += n * spec.growth_rate
                if i < len(spec.blocks) - 1:
                    self.features.add_module(f"transition{i + 1}", nn.Sequential(OrderedDict(
                        norm=nn.BatchNorm2d(f), relu=nn.ReLU(), conv=nn.Conv2d(f, f // 2, 1, bias=False),
                        pool=nn.AvgPool2d(2, 2))))
                    f //= 2
            self.features.add_module("norm5", nn.BatchNorm2d(f))
            self.classifier = nn.Linear(f, spec.n_classes)

        def forward(self, x):  # [B, C, H, W] -> logits [B, n_classes]
            y = torch.relu(self.features(x))
            y = torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)
            return self.classifier(y)


def torch_densenet(spec: DenseNetSpec):
    """A torchvision-layout DenseNet-BC for ``spec`` (random init, eval mode)."""
    _import_torch()
    return DenseNet(spec).eval()


def torch_logits(state_dict: dict[str, np.ndarray], spec: DenseNetSpec, x_nhwc: np.ndarray) -> np.ndarray:
    """Logits of the torchvision-layout DenseNet holding ``state_dict`` for NHWC images.

    Args:
        state_dict: canonical keys (``features.*``, ``classifier.weight/bias``; see
            :func:`cxrlib.weights.densenet.normalise_keys`).
        spec: the architecture (see :func:`cxrlib.weights.densenet.infer_spec`).
        x_nhwc: float32 ``[B, H, W, C]`` already normalised as the checkpoint expects.
    """
    _import_torch()
    net = torch_densenet(spec)
    missing, unexpected = net.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2)), dtype=np.float32))
        return net(x).numpy()


def randomise(net, seed: int = 0):
    """Random weights *and* BatchNorm statistics (a fresh net has mean 0 / var 1, which would
    hide a mis-mapped moving mean/variance or epsilon)."""
    _import_torch()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.4 * torch.rand(c, generator=g) - 0.2)
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
            elif isinstance(m, nn.Linear):  # logits of order 1 (a fresh head gives ~0.1)
                m.weight.mul_(20.0)
                m.bias.copy_(0.2 * torch.rand(m.out_features, generator=g) - 0.1)
    return net.eval()


def random_checkpoint(path, spec: DenseNetSpec, seed: int = 0, legacy: bool = False,
                      wrap: str | None = None) -> "torch.nn.Module":
    """Save a randomly initialised torchvision-layout DenseNet with ``torch.save``.

    Args:
        path: output file.
        spec: architecture.
        seed: torch seed.
        legacy: write PyTorch's pre-1.6 (non-zip) format.
        wrap: None (bare state dict), ``"state_dict"`` (``{"state_dict": sd, "epoch": 1}``) or
            ``"model"`` (``{"model": net}``: a whole pickled model, as jrzech/reproduce-chexnet).
    """
    _import_torch()
    torch.manual_seed(seed)
    net = randomise(DenseNet(spec), seed)
    obj = net.state_dict() if wrap is None else (
        {"state_dict": net.state_dict(), "epoch": 1} if wrap == "state_dict" else {"model": net, "epoch": 1})
    torch.save(obj, str(path), _use_new_zipfile_serialization=not legacy)
    return net

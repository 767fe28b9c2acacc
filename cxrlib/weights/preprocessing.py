"""Input normalisation a checkpoint was trained with, as a function of cxrlib's images.

cxrlib's input pipeline (:mod:`cxrlib.data.pipeline`) yields float32 images in 0..255; a
checkpoint expects them normalised as its publisher did:

- ``imagenet``: ``(x / 255 - mean) / std`` per RGB channel with ImageNet's mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225): torchvision's convention, used by the
  CheXNet reproductions (jrzech/reproduce-chexnet, arnoweng/CheXNet). Identical to
  ``keras.applications.densenet.preprocess_input`` (``'torch'`` mode), i.e. to what cxrlib
  already applies for ``backbone: densenet121`` (:func:`cxrlib.data.pipeline.preprocess_for`).
- ``xrv``: torchxrayvision's ``normalize(img, 255)``: ``x / 255 * 2048 - 1024`` on one grey
  channel (Cohen et al. 2022), i.e. mean 0.5 and std 1/2048 on the 0..1 scale.

For 1-channel images and 3-channel statistics, the channel means and stds are averaged
(what cxrlib does for ImageNet weights on grey input); feed 3 channels (``channels: 3``) for
the exact per-channel normalisation of the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """``f(x) = (x * scale - mean) / std`` per channel, for 0..255 images ``[..., H, W, C]``.

    Attributes:
        name: ``"imagenet"``, ``"xrv"`` or a custom label (recorded in ``config.json``).
        mean, std: per channel (length 1 or 3) on the ``x * scale`` scale.
        scale: 1/255 (input 0..255 -> 0..1).
        keras_backbone: the cxrlib backbone whose pipeline preprocessing is identical
            (``"densenet121"`` for ``imagenet``), or None when the stage must apply this one.
    """

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0 / 255.0
    keras_backbone: str | None = None

    def _stats(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        if channels == 1 and mean.size == 3:
            mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
        elif channels == 3 and mean.size == 1:
            mean, std = np.repeat(mean, 3), np.repeat(std, 3)
        return mean, std

    def __call__(self, x):
        """Normalise a TensorFlow tensor ``[..., H, W, C]`` of 0..255 values (tf.data map)."""
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        mean, std = self._stats(int(x.shape[-1]))
        return (x * self.scale - mean) / std

    def numpy(self, x: np.ndarray) -> np.ndarray:
        """Same as calling, for a NumPy array ``[..., H, W, C]``."""
        x = np.asarray(x, np.float32)
        mean, std = self._stats(x.shape[-1])
        return ((x * self.scale - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std),
                "scale": self.scale, "keras_backbone": self.keras_backbone}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocessing":
        return cls(str(d["name"]), tuple(d["mean"]), tuple(d["std"]), float(d.get("scale", 1 / 255)),
                   d.get("keras_backbone"))


IMAGENET = Preprocessing("imagenet", IMAGENET_MEAN, IMAGENET_STD, keras_backbone="densenet121")
XRV = Preprocessing("xrv", (0.5,), (1.0 / 2048.0,))
PRESETS: dict[str, Preprocessing] = {"imagenet": IMAGENET, "xrv": XRV}


def get_preprocessing(name: str | Preprocessing | Mapping) -> Preprocessing:
    """A preset by name (``imagenet``, ``xrv``), a dict from ``config.json``, or as given."""
    if isinstance(name, Preprocessing):
        return name
    if isinstance(name, Mapping):
        return Preprocessing.from_dict(name)
    if name not in PRESETS:
        raise ValueError(f"unknown input normalisation {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]

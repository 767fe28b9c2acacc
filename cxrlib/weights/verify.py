"""Compare the imported Keras model with PyTorch on the same inputs (``cxr weights verify``).

Needs the optional ``torch`` extra. The reference is the torchvision-layout DenseNet of
:mod:`cxrlib.weights.torch_reference` loaded with the checkpoint's state dict (read by
:mod:`cxrlib.weights.checkpoint`, not by ``torch.load``, so the reader is checked too only
through the Keras side; the torch side loads the same arrays). Inputs are random normalised
images (seeded), the comparison is on the head's logits.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from cxrlib.weights.load import import_densenet
from cxrlib.weights.torch_reference import torch_logits


def verify(ref: str | os.PathLike, image_size: int | Sequence[int] = 224, n_images: int = 2,
           seed: int = 0, keras_model=None) -> dict[str, Any]:
    """Max abs difference of Keras vs PyTorch logits for ``n_images`` random inputs.

    Args:
        ref: checkpoint (name, URL or path).
        image_size: input size.
        n_images: random images (standard normal, i.e. already normalised).
        seed: NumPy seed of the images.
        keras_model: compare this model (e.g. a saved ``model.h5``) instead of a fresh import.
    """
    from cxrlib.weights.checkpoint import read_checkpoint
    from cxrlib.weights.densenet import feature_logits, infer_spec, normalise_keys
    from cxrlib.weights.load import resolve_checkpoint

    imported = import_densenet(ref, image_size=image_size)
    path, _ = resolve_checkpoint(ref)
    sd = normalise_keys(read_checkpoint(path).state_dict)
    spec = infer_spec(sd)
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    x = np.random.default_rng(seed).standard_normal((n_images, h, w, spec.in_channels)).astype(np.float32)
    ref_logits = torch_logits(sd, spec, x)  # [B, K] in the checkpoint's output order
    model = keras_model if keras_model is not None else imported.model
    k_logits = feature_logits(model, x)
    if k_logits.shape != ref_logits.shape:
        raise ValueError(f"Keras model gives {k_logits.shape}, PyTorch {ref_logits.shape}")
    diff = np.abs(k_logits - ref_logits)
    return {"checkpoint": str(path), "architecture": spec.name, "in_channels": spec.in_channels,
            "outputs": spec.n_classes, "image_size": [h, w], "n_images": n_images,
            "max_abs_logit_diff": float(diff.max()),
            "max_abs_logit": float(np.abs(ref_logits).max())}

"""CheXNet-class DenseNet weights from PyTorch checkpoints as cxrlib's flat Keras models.

Chest X-ray researchers share DenseNet121 weights as PyTorch checkpoints in torchvision's
layout: CheXNet reproductions (Rajpurkar et al. 2017, arXiv 1711.05225; jrzech/reproduce-chexnet,
arnoweng/CheXNet: ImageNet -> NIH ChestX-ray14, 14 findings) and torchxrayvision's
``densenet121-res224-*`` sets (Cohen et al. 2022). Paper B's twice transfer (Bassi & Attux
2020, arXiv 2005.01578) starts from exactly such a network. This package turns them into the
flat Keras model of :mod:`cxrlib.models` (layer names of ``keras.applications.DenseNet121``)
without needing PyTorch:

- :mod:`~cxrlib.weights.checkpoint` reads ``torch.save`` files (zip and legacy formats, state
  dicts and whole pickled models) with a restricted unpickler into NumPy.
- :mod:`~cxrlib.weights.densenet` infers the architecture (growth rate, blocks, stem
  channels, classes), maps and transposes the weights, BatchNorm epsilon 1e-5.
- :mod:`~cxrlib.weights.registry` lists the published sets with URLs, cached in
  ``~/.keras/models/`` on first use; offline errors say where to put the file.
- :mod:`~cxrlib.weights.load`: ``import_densenet`` and ``source_model_from_spec``.
- :mod:`~cxrlib.weights.verify` / ``cxr weights verify``: Keras vs PyTorch logits (needs torch).

Experiment YAML (paper B's source stage starting from a checkpoint instead of training)::

    source:
      init: "checkpoint:chexnet"      # or checkpoint:/path/to/file, checkpoint:https://...
      classes: nih14                  # head = the 14 NIH findings in cxrlib's order, by name

Python::

    from cxrlib.weights import import_densenet
    model, classes, preprocessing = import_densenet("chexnet", classes="nih14")
    probs = model.predict(preprocessing.numpy(images_0_255))   # [B, 14] sigmoid
"""

from cxrlib.weights.checkpoint import CheckpointError, read_checkpoint
from cxrlib.weights.densenet import DenseNetSpec, NotADenseNet
from cxrlib.weights.load import (ImportedModel, import_densenet, resolve_checkpoint, save_imported,
                                 source_model_from_spec)
from cxrlib.weights.preprocessing import Preprocessing, get_preprocessing
from cxrlib.weights.registry import WEIGHT_SETS, WeightsUnavailable, fetch, get_weight_set

__all__ = [
    "CheckpointError", "DenseNetSpec", "ImportedModel", "NotADenseNet", "Preprocessing",
    "WEIGHT_SETS", "WeightsUnavailable", "fetch", "get_preprocessing", "get_weight_set",
    "import_densenet", "read_checkpoint", "resolve_checkpoint", "save_imported",
    "source_model_from_spec",
]

"""Published DenseNet weight sets for chest X-rays, downloaded on first use like Keras' own.

Each :class:`WeightSet` names the file, its URL, the output classes in head order, the
input normalisation (:mod:`cxrlib.weights.preprocessing`), the stem's channels and the
image size it was trained at. ``fetch(name)`` returns the cached file
(``$KERAS_HOME/models/<file>``, i.e. ``~/.keras/models/``, next to keras.applications'
ImageNet files), downloading it once with ``keras.utils.get_file``; offline (or with
``CXR_NO_DOWNLOAD=1``) it raises :class:`WeightsUnavailable` naming the URL and the exact
path to place the file at.

Sets:

- ``chexnet`` (jrzech/reproduce-chexnet ``pretrained/checkpoint``; Zech 2018, a reproduction
  of CheXNet, Rajpurkar et al. 2017, arXiv 1711.05225): torchvision DenseNet121, ImageNet ->
  NIH ChestX-ray14, 14 sigmoid outputs, ImageNet normalisation, RGB, 224 px; a legacy
  (PyTorch 0.3/0.4) whole-model pickle.
- ``chexnet-arnoweng`` (arnoweng/CheXNet ``model.pth.tar``): same architecture and classes,
  ``module.densenet121.*`` keys in the pre-0.4 ``norm.1`` naming.
- ``densenet121-res224-{all,nih,pc,chex,rsna,mimic_nb,mimic_ch}`` (torchxrayvision; Cohen et
  al. 2022, arXiv 2111.00595): 1-channel DenseNet121, 18 outputs (names as published; an
  output a set was not trained for has an empty name, kept here as ``unused_<i>``),
  torchxrayvision normalisation ([-1024, 1024]), 224 px.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cxrlib.weights.preprocessing import IMAGENET, XRV, Preprocessing

NIH14_CHEXNET_ORDER: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
_XRV_ALL = ("Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
            "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule",
            "Mass", "Hernia", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum")
_XRV_URL = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"


class WeightsUnavailable(RuntimeError):
    """A published weight set is not cached and cannot be downloaded (message says where to put it)."""


@dataclass(frozen=True)
class WeightSet:
    """One published checkpoint."""

    name: str
    url: str
    file: str  # cache file name (unique: several publishers call theirs "checkpoint")
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    channels: int = 3
    image_size: int = 224
    description: str = ""
    citation: str = ""
    aliases: tuple[str, ...] = field(default=())


def _xrv(key: str, remote: str, mask: str, description: str) -> WeightSet:
    # mask: 1 = output trained for this set, 0 = published with an empty name
    classes = tuple(c if m == "1" else f"unused_{i}" for i, (c, m) in enumerate(zip(_XRV_ALL, mask)))
    return WeightSet(f"densenet121-res224-{key}", _XRV_URL + remote, remote, classes, XRV, channels=1,
                     description=f"torchxrayvision DenseNet121, {description}, 1-channel, 224 px",
                     citation="Cohen et al., TorchXRayVision, MIDL 2022 (arXiv 2111.00595)",
                     aliases=(f"xrv-{key}",))


_SETS: tuple[WeightSet, ...] = (
    WeightSet("chexnet", "https://github.com/jrzech/reproduce-chexnet/raw/master/pretrained/checkpoint",
              "reproduce-chexnet-checkpoint", NIH14_CHEXNET_ORDER, IMAGENET,
              description="CheXNet reproduction (jrzech/reproduce-chexnet): torchvision DenseNet121, "
                          "ImageNet -> NIH ChestX-ray14, 14 sigmoid outputs, RGB, 224 px",
              citation="Zech, reproduce-chexnet (2018); Rajpurkar et al., CheXNet, arXiv 1711.05225",
              aliases=("chexnet-jrzech", "reproduce-chexnet")),
    WeightSet("chexnet-arnoweng", "https://github.com/arnoweng/CheXNet/raw/master/model.pth.tar",
              "arnoweng-chexnet-model.pth.tar", NIH14_CHEXNET_ORDER, IMAGENET,
              description="CheXNet re-implementation (arnoweng/CheXNet): DenseNet121, NIH "
                          "ChestX-ray14, 14 outputs, RGB, 224 px",
              citation="Weng et al., arnoweng/CheXNet (2017); Rajpurkar et al., arXiv 1711.05225"),
    _xrv("all", "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
         "1" * 18, "NIH + PadChest + CheXpert + MIMIC-CXR + Google + OpenI + RSNA"),
    _xrv("nih", "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt", "1" * 14 + "0" * 4,
         "NIH ChestX-ray14"),
    _xrv("pc", "pc-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt", "1" * 14 + "0100", "PadChest"),
    _xrv("chex", "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
         "110110011010001111", "CheXpert"),
    _xrv("rsna", "kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
         "000000001000000010", "RSNA Pneumonia Challenge"),
    _xrv("mimic_nb", "mimic_nb-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
         "110110011010001111", "MIMIC-CXR (NegBio labels)"),
    _xrv("mimic_ch", "mimic_ch-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
         "110110011010001111", "MIMIC-CXR (CheXpert labels)"),
)
WEIGHT_SETS: dict[str, WeightSet] = {w.name: w for w in _SETS}
_ALIASES: dict[str, str] = {a: w.name for w in _SETS for a in w.aliases}


def get_weight_set(name: str) -> WeightSet:
    """A known weight set by name or alias; the error lists the known names."""
    key = _ALIASES.get(name, name)
    if key not in WEIGHT_SETS:
        raise KeyError(f"unknown weight set {name!r}; known: {', '.join(WEIGHT_SETS)} "
                       "(or give the path or URL of a checkpoint file)")
    return WEIGHT_SETS[key]


def cache_path(ws: WeightSet) -> Path:
    """Where the file of ``ws`` is cached (``$KERAS_HOME/models/<file>``)."""
    from cxrlib.models import keras_cache_dir

    return keras_cache_dir() / ws.file


def _offline_help(file: str, url: str, dest: Path, reason: str) -> str:
    return (f"checkpoint {file} is not available ({reason}). Download it once from {url} "
            f"and place it at {dest} (or set KERAS_HOME to a folder holding models/{file}); "
            "or give a local path: init: \"checkpoint:/path/to/file\".")


def download(url: str, file: str | None = None) -> Path:
    """Cached copy of ``url`` in the Keras cache, downloaded on first use.

    Raises:
        WeightsUnavailable: not cached and the download failed or ``CXR_NO_DOWNLOAD`` is set.
    """
    from cxrlib.models import keras_cache_dir

    file = file or os.path.basename(url.split("?", 1)[0]) or "checkpoint"
    dest = keras_cache_dir() / file
    if dest.is_file():
        return dest
    if os.environ.get("CXR_NO_DOWNLOAD", "") not in ("", "0"):
        raise WeightsUnavailable(_offline_help(file, url, dest, "not cached and CXR_NO_DOWNLOAD is set"))
    from tensorflow import keras

    try:
        return Path(keras.utils.get_file(file, url, cache_subdir="models"))
    except Exception as exc:  # offline: URLError, DNS, proxy, HTTP error
        raise WeightsUnavailable(_offline_help(file, url, dest, f"download failed: "
                                               f"{type(exc).__name__}: {exc}")) from exc


def fetch(name: str) -> Path:
    """The checkpoint file of a known weight set (downloaded on first use)."""
    ws = get_weight_set(name)
    return download(ws.url, ws.file)

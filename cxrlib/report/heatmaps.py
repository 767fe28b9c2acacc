"""What notebook ``05_heatmaps`` needs around cxrlib.explain: which models, which images.

Heatmaps, scores and the shortcut audit are cxrlib.explain's (Grad-CAM via tf-keras-vis,
LRP via iNNvestigate in a graph-mode worker process that loads ``model.h5``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from cxrlib.report.plan import HOLDOUT, fold_ids


def heatmap_fold(cfg: Mapping[str, Any]) -> int:
    """The fold whose models are explained: ``heatmaps.fold`` (default the first), or hold-out."""
    folds = fold_ids(cfg)
    if folds == [HOLDOUT]:
        return HOLDOUT
    fold = int((cfg.get("heatmaps") or {}).get("fold", folds[0]))
    if fold not in folds:
        raise ValueError(f"heatmaps.fold={fold} is not a fold of this run ({folds})")
    return fold


def heatmap_models(ctx) -> dict[str, Path]:
    """{strategy: its transfer stage folder on :func:`heatmap_fold`} for ``heatmaps.strategies``."""
    cfg = ctx.cfg
    names = (cfg.get("heatmaps") or {}).get("strategies") or list(cfg["strategies"])
    unknown = [n for n in names if n not in cfg["strategies"]]
    if unknown:
        raise ValueError(f"heatmaps.strategies: {unknown} not among strategies {list(cfg['strategies'])}")
    fold = heatmap_fold(cfg)
    out = {}
    for s in ctx.transfer_stages():
        if s.params["strategy"] in names and s.params["fold"] == fold:
            out[s.params["strategy"]] = ctx.stage_path(s.id)
    return out


def select_images(target: pd.DataFrame, cfg: Mapping[str, Any], n: int = 8, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` test images of :func:`heatmap_fold`, spread over the classes with lesions.

    Images with a ground-truth mask are preferred (they can be scored); without masks in
    the data (real images) any test images are taken.

    Args:
        target: the run's target manifest (with ``fold`` or ``split``).
        cfg: resolved config.
        n: number of images.
        seed: sampling seed.
    """
    fold = heatmap_fold(cfg)
    test = fold_test_rows(target, cfg)
    if "mask_path" in test.columns and (test["mask_path"] != "").any():
        # scorable images: a mask file and a lesion (normal images have none by definition)
        test = test[(test["mask_path"] != "") & (test["label"] != "normal")]
    if len(test) == 0:
        raise ValueError(f"no test image to explain on fold {fold}")
    labels = list(dict.fromkeys(test["label"]))
    per = max(1, math.ceil(n / len(labels)))
    parts = [test[test["label"] == c].sample(n=min(per, int((test["label"] == c).sum())), random_state=seed)
             for c in labels]
    return pd.concat(parts).head(n).reset_index(drop=True)


def fold_test_rows(target: pd.DataFrame, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Test images of :func:`heatmap_fold` (the hold-out ``test`` split, or the fold)."""
    fold = heatmap_fold(cfg)
    if fold == HOLDOUT:
        return target[target["split"] == "test"].reset_index(drop=True)
    return target[target["fold"].astype(str) == str(fold)].reset_index(drop=True)

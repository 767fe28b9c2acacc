"""Masking ablation: does hiding a region (border, burnt-in text) change the predictions?

Paper B (Bassi & Attux, arXiv 2005.01578) saw that words on the X-rays attract LRP relevance
yet hardly change the accuracy; relevance is not reliance. The ablation measures reliance: the
predictions with a region replaced by the image's mean, compared with the predictions when a
same-size **control** region elsewhere is masked (masking anything perturbs a model a little).

- ``mask_regions(images, masks, fill="mean")``
- ``masked_accuracy(model, images, labels, regions) -> DataFrame``
- ``control_masks(masks)``, ``with_controls(regions)``
- ``region_effects(ablation) -> DataFrame``: flips on each region vs its control, per model.

:func:`cxrlib.explain.shortcuts.shortcut_verdict` turns ``region_effects`` into the verdict.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd


def mask_regions(images: np.ndarray, masks: np.ndarray, fill: str | float = "mean") -> np.ndarray:
    """Copy of ``images`` with the masked pixels replaced.

    Args:
        images: float [N, H, W, C] (preprocessed or raw).
        masks: bool [N, H, W] or one [H, W] for all images.
        fill: ``"mean"`` (per image and channel, mean of the pixels outside the mask), or a number.
    """
    images = np.array(images, dtype=np.float32, copy=True)
    masks = np.broadcast_to(np.asarray(masks, dtype=bool), images.shape[:3])
    for i in range(len(images)):
        m = masks[i]
        if not m.any():
            continue
        if fill == "mean":
            value = images[i][~m].mean(axis=0) if (~m).any() else 0.0  # [C]
        else:
            value = float(fill)
        images[i][m] = value
    return images


def masked_accuracy(model, images: np.ndarray, labels: np.ndarray, regions: Mapping[str, np.ndarray],
                    fill: str | float = "mean", batch_size: int = 32) -> pd.DataFrame:
    """Accuracy with and without each region masked out (single-label models).

    Args:
        model: keras model (or any object with ``predict``) giving [N, K] scores.
        images: float32 [N, H, W, C], preprocessed for the model.
        labels: int [N] true class indices.
        regions: name -> bool mask [N, H, W] or [H, W] (e.g. ``{"border": ..., "text": ...}``).
        fill: see :func:`mask_regions`.
        batch_size: prediction batch size.

    Returns:
        DataFrame[region, n, n_masked, accuracy, accuracy_unmasked, delta, changed]:
        ``changed`` is the fraction of predictions that flip when the region is masked.
    """
    labels = np.asarray(labels, dtype=int)
    base = np.asarray(model.predict(images, batch_size=batch_size, verbose=0)).argmax(axis=1)
    acc0 = float((base == labels).mean())
    rows = [{"region": "none", "n": len(labels), "n_masked": 0, "accuracy": acc0,
             "accuracy_unmasked": acc0, "delta": 0.0, "changed": 0.0}]
    for name, masks in regions.items():
        masks = np.broadcast_to(np.asarray(masks, dtype=bool), images.shape[:3])
        pred = np.asarray(model.predict(mask_regions(images, masks, fill), batch_size=batch_size,
                                        verbose=0)).argmax(axis=1)
        acc = float((pred == labels).mean())
        rows.append({"region": name, "n": len(labels), "n_masked": int(masks.any(axis=(1, 2)).sum()),
                     "accuracy": acc, "accuracy_unmasked": acc0, "delta": acc - acc0,
                     "changed": float((pred != base).mean())})
    return pd.DataFrame(rows)


def _away(m: np.ndarray, mirror: np.ndarray, max_overlap: float) -> np.ndarray | None:
    """``mirror`` slid horizontally away from ``m`` to the image edge, when the two then overlap by
    at most ``max_overlap`` of the area; None otherwise."""
    cols_m, cols_r = np.nonzero(m.any(axis=0))[0], np.nonzero(mirror.any(axis=0))[0]
    if cols_r.mean() < cols_m.mean():  # slide left to column 0
        moved = np.roll(mirror, -int(cols_r.min()), axis=1)
    else:  # slide right to the last column
        moved = np.roll(mirror, mirror.shape[1] - 1 - int(cols_r.max()), axis=1)
    return moved if (moved & m).sum() <= max_overlap * m.sum() else None


def control_masks(masks: np.ndarray, max_overlap: float = 0.5) -> np.ndarray:
    """Same-size control regions for the masking ablation (bool [N, H, W] or [H, W]).

    Masking any region perturbs a model a little (a small model more); the flips caused by
    masking a control region of the same size elsewhere are the baseline a region's effect is
    judged against (:func:`region_effects`). Per mask:

    - its left-right mirror, when the mirror overlaps the mask by at most ``max_overlap`` of its
      area (a text box in one corner -> the same box in the opposite corner); a wide box near
      the middle (e.g. a 27 px label in the top-right corner of a 48 px phantom) overlaps its own
      mirror, which is then slid away from it to the image edge (-> the same box on the other
      shoulder, still outside the lungs);
    - otherwise (a symmetric region such as the :func:`border_mask` frame, whose mirror is
      itself) a rectangle of the same pixel count, with the aspect ratio of the mask's bounding
      box, centred in the image: inside the body. For the 10 % border that is the central
      60 % x 60 % square (36 % of the image either way), i.e. masking the border is compared
      with masking the lungs: a conservative control (a model that uses the lungs flips there).
    """
    masks = np.asarray(masks, dtype=bool)
    flat = masks.reshape((-1,) + masks.shape[-2:])  # [N, H, W]
    out = np.zeros_like(flat)
    h, w = flat.shape[1:]
    for i, m in enumerate(flat):
        area = int(m.sum())
        if area == 0:
            continue
        mirror = m[:, ::-1]
        if (mirror & m).sum() <= max_overlap * area:
            out[i] = mirror
            continue
        moved = _away(m, mirror, max_overlap) if (mirror != m).any() else None
        if moved is not None:
            out[i] = moved
            continue
        ys, xs = np.nonzero(m)
        aspect = (ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1)  # bounding box height / width
        ch = int(np.clip(round(np.sqrt(area * aspect)), 1, h))
        cw = int(np.clip(round(area / ch), 1, w))
        top, left = (h - ch) // 2, (w - cw) // 2
        out[i, top:top + ch, left:left + cw] = True
    return out.reshape(masks.shape)


def with_controls(regions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``regions`` plus ``<name>_control`` (:func:`control_masks`) for each, ready for :func:`masked_accuracy`."""
    out = dict(regions)
    for name, masks in regions.items():
        out[f"{name}_control"] = control_masks(masks)
    return out


def region_effects(ablation: pd.DataFrame) -> pd.DataFrame:
    """Flip rate of each masked region against its control, per model.

    Args:
        ablation: :func:`masked_accuracy` rows with a ``model`` column; a region ``R`` is
            compared with the row ``R_control`` of the same model when there is one.

    Returns:
        DataFrame[model, region, n_masked, flips, flips_control, excess]: ``flips`` is the share
        of the predictions *of the masked images* that change (``changed * n / n_masked``),
        ``flips_control`` the same for the control region (NaN without one) and ``excess`` =
        flips - flips_control (flips when there is no control).
    """
    cols = ["model", "region", "n_masked", "flips", "flips_control", "excess"]
    a = ablation[ablation["region"] != "none"]
    frac = (a["changed"] * a["n"] / a["n_masked"].where(a["n_masked"] > 0)).fillna(0.0)
    flips = dict(zip(zip(a["model"], a["region"]), frac))
    rows = []
    for (m, r), n in zip(zip(a["model"], a["region"]), a["n_masked"]):
        if str(r).endswith("_control"):
            continue
        ctrl = flips.get((m, f"{r}_control"), np.nan)
        f = flips[(m, r)]
        rows.append({"model": m, "region": r, "n_masked": int(n), "flips": f, "flips_control": ctrl,
                     "excess": f - (0.0 if np.isnan(ctrl) else ctrl)})
    return pd.DataFrame(rows, columns=cols)

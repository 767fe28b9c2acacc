"""Shortcut audit: is the model looking at the patient, or at the border, the text, the source?

Paper B (Bassi & Attux) found with LRP that words printed on the X-rays influenced the
predictions. This module turns that observation into numbers.

API (stable):

- ``border_mask(image_size, width=0.1) -> bool [H, W]``: the outer frame (``width`` in pixels,
  or a fraction of the side when < 1).
- ``text_masks(df, root, image_size, column="text_box", resize_mode="pad")``: burnt-in text
  regions of the manifest rows (``x,y,w,h`` in stored pixels) as bool [N, H, W], plus a
  bool [N] telling which rows have one.
- ``shortcut_audit(maps, df, root, image_size, border=0.1, ...) -> DataFrame``: per image and
  region (``border``, ``text``): positive relevance ``mass`` in the region, its ``area``
  fraction and ``enrichment`` = mass / area (1 = what a uniform map gives).
- ``audit_summary(audit, threshold=2.0) -> DataFrame``: per model, method and region: mean mass,
  mean area, ``enrichment`` = mean mass / mean area, ``flagged`` = enrichment > threshold.
- ``mask_regions``, ``masked_accuracy``, ``control_masks``, ``with_controls``, ``region_effects``:
  the masking ablation, in :mod:`cxrlib.explain.ablation` (re-exported here).
- ``source_classifier(features_or_images, sources, groups, ...) -> SourceCheck`` and
  ``source_classifier_from_manifest(df, root, image_size=32)``: can a logistic regression on
  downsampled pixels tell which collection an image comes from? Patient-grouped stratified CV
  (scikit-learn), accuracy vs the majority baseline; a high number is a confounding warning.
- ``control_masks(masks)``, ``with_controls(regions)``: same-size control regions (mirrored box,
  or a centred box inside the body for symmetric regions such as the border);
  ``region_effects(ablation)``: flip rate of each region vs its control, per model.
- ``shortcut_verdict(summary, ablation, external=None, ...) -> DataFrame``: per model, the
  audit's verdict combining relevance (enrichment), effect (masking ablation) and the
  external-validation warnings (see :data:`VERDICTS` and the function's docstring).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib.explain.ablation import (control_masks, mask_regions, masked_accuracy,  # noqa: F401 (re-exported)
                                     region_effects, with_controls)
from cxrlib.explain.scoring import box_mask, mass_inside, parse_box


def border_mask(image_size: int | tuple[int, int], width: float = 0.1) -> np.ndarray:
    """Bool [H, W] mask of the image border.

    Args:
        image_size: side (square) or (height, width).
        width: border width in pixels (>= 1) or as a fraction of each side (0 < width < 1).
    """
    h, w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if width <= 0:
        raise ValueError(f"border width must be positive, got {width}")
    bh, bw = (max(1, int(round(width * h))), max(1, int(round(width * w)))) if width < 1 else (int(width), int(width))
    if 2 * bh >= h or 2 * bw >= w:
        raise ValueError(f"border width {width} covers the whole {h}x{w} image")
    m = np.ones((h, w), dtype=bool)
    m[bh:h - bh, bw:w - bw] = False
    return m


def _stored_shape(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:  # reads the header only
        return im.height, im.width


def text_masks(df: pd.DataFrame, root, image_size: int, column: str = "text_box",
               resize_mode: str = "pad") -> tuple[np.ndarray, np.ndarray]:
    """Burnt-in text regions in the model's input grid.

    Args:
        df: manifest rows; ``column`` holds ``x,y,w,h`` in stored-image pixels or ''.
        root: data root (stored image sizes are read from the files' headers).
        image_size: model input size.
        column: the box column (``text_box``; phantoms also have ``lr_box``).
        resize_mode: the pipeline's resize mode used for the images.

    Returns:
        (masks bool [N, H, W], has_box bool [N]).

    Raises:
        ValueError: naming the CSV line of a malformed box or a missing column.
    """
    from cxrlib.data.manifest import line_of

    if column not in df.columns:
        raise ValueError(f"manifest has no {column!r} column")
    masks = np.zeros((len(df), image_size, image_size), dtype=bool)
    has = np.zeros(len(df), dtype=bool)
    for i, (path, cell) in enumerate(zip(df["path"], df[column])):
        try:
            box = parse_box(cell)
        except ValueError as exc:
            raise ValueError(f"line {line_of(i)}, column {column!r}: {exc}") from None
        if box is None:
            continue
        masks[i] = box_mask([box], _stored_shape(Path(root) / path), image_size, resize_mode=resize_mode)
        has[i] = masks[i].any()
    return masks, has


def shortcut_audit(maps: np.ndarray, df: pd.DataFrame, root, image_size: int, border: float = 0.1,
                   method: str = "", model: str = "", text_column: str = "text_box",
                   resize_mode: str = "pad") -> pd.DataFrame:
    """Positive relevance in the border and in burnt-in text, per image.

    Args:
        maps: [N, H, W] heatmaps of the rows of ``df`` (same order).
        df: manifest rows (``text_column`` optional: without it only the border is audited).
        root: data root.
        image_size: model input size (= map size).
        border: border width (pixels, or fraction of the side when < 1).
        method, model: names recorded in the table.
        text_column: column with ``x,y,w,h`` text boxes.
        resize_mode: the pipeline's resize mode.

    Returns:
        DataFrame[path, model, method, region, mass, area, enrichment]; text rows only for
        images that have a text box; ``mass`` is NaN for a map without positive relevance.
    """
    maps = np.asarray(maps)
    if len(maps) != len(df):
        raise ValueError(f"{len(maps)} maps for {len(df)} manifest rows")
    if maps.shape[1:] != (image_size, image_size):
        raise ValueError(f"maps of shape {maps.shape[1:]} do not match image_size {image_size}")
    regions = {"border": (np.broadcast_to(border_mask(image_size, border), maps.shape), np.ones(len(df), bool))}
    if text_column in df.columns:
        regions["text"] = text_masks(df, root, image_size, text_column, resize_mode)
    rows = []
    for region, (masks, present) in regions.items():
        for i in np.nonzero(present)[0]:
            area = float(masks[i].mean())
            mass = mass_inside(maps[i], masks[i])
            rows.append({"path": df["path"].iloc[i], "model": model, "method": method, "region": region,
                         "mass": mass, "area": area, "enrichment": mass / area})
    return pd.DataFrame(rows, columns=["path", "model", "method", "region", "mass", "area", "enrichment"])


def audit_summary(audit: pd.DataFrame, threshold: float = 2.0) -> pd.DataFrame:
    """Flag regions that attract more relevance than their area warrants.

    Args:
        audit: :func:`shortcut_audit` output (several models/methods may be concatenated).
        threshold: ``flagged`` when mean mass / mean area exceeds it (2 = twice the uniform share).

    Returns:
        DataFrame[model, method, region, n, n_undefined, mass, area, enrichment, flagged].
    """
    g = audit.groupby(["model", "method", "region"], sort=True)
    out = g.agg(n=("mass", "size"), mass=("mass", "mean"), area=("area", "mean")).reset_index()
    out.insert(4, "n_undefined", g["mass"].apply(lambda v: int(v.isna().sum())).to_numpy())
    out["enrichment"] = out["mass"] / out["area"]
    out["flagged"] = out["enrichment"] > threshold
    return out


@dataclass
class SourceCheck:
    """Result of :func:`source_classifier`: can pixels alone reveal the collection?"""

    accuracy: float  # mean over folds
    accuracy_std: float
    balanced_accuracy: float  # mean over folds (chance = 1 / number of sources)
    baseline: float  # majority-class accuracy (predicting the largest source)
    n_images: int
    n_groups: int
    n_splits: int
    counts: dict = field(default_factory=dict)  # images per source
    per_fold: list = field(default_factory=list)
    set_aside: dict = field(default_factory=dict)  # source -> reason it could not be cross-validated

    @property
    def warning(self) -> str:
        """A sentence for reports: how far above the majority baseline the classifier gets."""
        gap = self.accuracy - self.baseline
        level = "STRONG confounding" if gap > 0.2 else "confounding" if gap > 0.05 else "no clear confounding"
        return (f"{level}: a logistic regression on downsampled pixels tells the image source with "
                f"accuracy {self.accuracy:.3f} ± {self.accuracy_std:.3f} (balanced {self.balanced_accuracy:.3f}) "
                f"vs majority baseline {self.baseline:.3f} ({self.n_images} images, {self.n_groups} patients, "
                f"{self.n_splits}-fold patient-grouped CV). A classifier trained on these images can learn the "
                "source instead of the disease."
                + (" Left out (too few patients to cross-validate): "
                   + "; ".join(f"{k}: {v}" for k, v in self.set_aside.items()) + "." if self.set_aside else ""))


def source_classifier(images: np.ndarray, sources: Sequence[str], groups: Sequence[str],
                      n_splits: int = 5, seed: int = 0, C: float = 0.1) -> SourceCheck:
    """Patient-grouped CV accuracy of a logistic regression predicting the source collection.

    Args:
        images: [N, ...] downsampled images (flattened inside) or feature vectors.
        sources: [N] source name per image (manifest ``source``).
        groups: [N] patient group per image (images of one patient never straddle folds).
        n_splits: CV folds (``StratifiedGroupKFold``), at most: with fewer patients in a
            source, the folds are reduced to that number (at least 2), and a source with a
            single patient is left out with the reason (``SourceCheck.set_aside``) rather than
            stopping the report.
        seed: fold shuffling seed.
        C: inverse L2 regularisation of the logistic regression.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)  # [N, D]
    y = np.asarray(sources).astype(str)
    g = np.asarray(groups).astype(str)
    if not (len(x) == len(y) == len(g)):
        raise ValueError(f"{len(x)} images, {len(y)} sources and {len(g)} groups differ in number")
    set_aside = {}
    for name in np.unique(y):  # a source needs 2 patients to be in a test fold and a training fold
        n_pat = len(np.unique(g[y == name]))
        if n_pat < 2:
            set_aside[str(name)] = f"{int((y == name).sum())} image(s) of {n_pat} patient"
    if set_aside:
        keep = ~np.isin(y, list(set_aside))
        x, y, g = x[keep], y[keep], g[keep]
    names, counts = np.unique(y, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"need at least two sources with 2 or more patients each, got {list(names)}"
                         + (f" (left out: {set_aside})" if set_aside else ""))
    fewest = min(len(np.unique(g[y == name])) for name in names)
    n_splits = max(2, min(n_splits, fewest))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    accs, baccs = [], []
    for train, test in cv.split(x, y, g):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        clf.fit(x[train], y[train])
        pred = clf.predict(x[test])
        accs.append(accuracy_score(y[test], pred))
        baccs.append(balanced_accuracy_score(y[test], pred))
    return SourceCheck(accuracy=float(np.mean(accs)), accuracy_std=float(np.std(accs)),
                       balanced_accuracy=float(np.mean(baccs)), baseline=float(counts.max() / counts.sum()),
                       n_images=len(y), n_groups=len(np.unique(g)), n_splits=n_splits,
                       counts=dict(zip(names.tolist(), counts.tolist())), per_fold=[float(a) for a in accs],
                       set_aside=set_aside)


def source_classifier_from_manifest(df: pd.DataFrame, root: str | os.PathLike, image_size: int = 32,
                                    resize_mode: str = "pad", **kwargs) -> SourceCheck:
    """:func:`source_classifier` on a manifest's images (gray, ``image_size`` px, raw 0..255).

    Groups are (source, patient_id) pairs, as in cxrlib's splits.

    Args:
        df: manifest rows of at least two sources.
        root: data root.
        image_size: side of the downsampled images.
        resize_mode: the pipeline's resize mode (``pad`` keeps aspect with black bars, itself a
            possible source cue; ``stretch`` removes it).
        **kwargs: passed to :func:`source_classifier`.
    """
    from cxrlib.data.pipeline import load_images

    x = load_images(df, root, image_size, channels=1, backbone=None, resize_mode=resize_mode)  # [N, s, s, 1]
    groups = (df["source"].astype(str) + "/" + df["patient_id"].astype(str)).to_numpy()
    return source_classifier(x / 255.0, df["source"].to_numpy(), groups, **kwargs)


VERDICTS = {
    "relevance and effect": "the heatmaps point at a region AND masking it (or external data) changes what "
                            "the model does: a shortcut in use",
    "relevance without effect": "the heatmaps point at a region but masking it barely changes the predictions "
                                "and external results hold: relevance is not reliance (paper B saw this for words)",
    "effect without relevance": "the heatmaps do not point at a region, yet masking a region or an external "
                                "collection changes the predictions: a shortcut the heatmaps miss",
    "no evidence": "no region attracts excess relevance and nothing measured changes the predictions",
}


def shortcut_verdict(summary: pd.DataFrame, ablation: pd.DataFrame, external: Sequence[Mapping] | None = None,
                     enrichment_threshold: float = 2.0, effect_threshold: float = 0.2) -> pd.DataFrame:
    """The audit's verdict per model: relevance (heatmaps) x effect (ablation, external data).

    Thresholds (defaults): a region has **relevance** when any method's enrichment exceeds
    ``enrichment_threshold`` (2.0 = twice the uniform share, as :func:`audit_summary`); it has
    **effect** when masking it flips more than ``effect_threshold`` (20 points) of the
    predictions *of the images where it was masked* (``changed * n / n_masked`` of
    :func:`masked_accuracy`) beyond the flips of its control region when the ablation has one
    (a region named ``<region>_control``, from :func:`control_masks` / :func:`with_controls`;
    the excess is :func:`region_effects`' ``excess``). 20 points: a fifth of the masked images
    change class because of *where* the mask is rather than *that* something was masked; below
    it, a few flips on a test fold of tens of images are within sampling noise. Measured on the
    phantoms of ``tests/explain/test_shortcuts.py``: masking the text flipped 17 of 21 masked
    predictions of the text-shortcut model and 2 of 16 of the clean model.
    A model **fails externally** when it has any external-validation warning other than
    ``too_few`` (:func:`cxrlib.validation.metrics.external_warnings`: low specificity on
    external normals or non-COVID images, or a large internal-external gap); that counts as an
    effect of a shortcut that no mask isolates (e.g. the collection itself).

    Args:
        summary: :func:`audit_summary` rows (model, method, region, enrichment).
        ablation: :func:`masked_accuracy` rows with a ``model`` column.
        external: warning dicts (with ``model`` and ``kind``), or None when not evaluated.
        enrichment_threshold, effect_threshold: see above.

    Returns:
        DataFrame[model, verdict, relevance (regions), effect (regions), external, evidence]
        with ``verdict`` one of :data:`VERDICTS` and ``evidence`` a sentence with the numbers.
    """
    names = sorted(set(summary["model"]) | set(ablation["model"]))
    effects = region_effects(ablation)
    rows = []
    for m in names:
        s = summary[summary["model"] == m]
        rel = s[s["enrichment"] > enrichment_threshold]
        e = effects[effects["model"] == m]
        ext = None if external is None else [w for w in external if w.get("model") == m and w.get("kind") != "too_few"]
        rel_regions, eff_regions = sorted(set(rel["region"])), sorted(set(e["region"][e["excess"] > effect_threshold]))
        shown = set(rel_regions) & set(eff_regions)
        if rel_regions and (shown or ext):
            verdict = "relevance and effect"
        elif rel_regions:
            verdict = "relevance without effect"
        elif eff_regions or ext:
            verdict = "effect without relevance"
        else:
            verdict = "no evidence"
        parts = [f"{r.region} enrichment " + ("undefined, no positive relevance" if np.isnan(r.enrichment)
                                              else f"{r.enrichment:.2f}") + f" ({r.method})" for r in s.itertuples()]
        parts += [f"masking {r.region} flips {r.flips:.0%} of {r.n_masked} masked"
                  + ("" if np.isnan(r.flips_control) else f" (control {r.flips_control:.0%})") for r in e.itertuples()]
        parts.append("not evaluated on external data" if ext is None else
                     f"{len(ext)} external warning(s)" + (f": {ext[0]['message']}" if ext else ""))
        rows.append({"model": m, "verdict": verdict, "relevance": ", ".join(rel_regions),
                     "effect": ", ".join(eff_regions), "external": None if ext is None else len(ext),
                     "evidence": "; ".join(parts)})
    return pd.DataFrame(rows, columns=["model", "verdict", "relevance", "effect", "external", "evidence"])

"""What notebook ``05_heatmaps`` needs around cxrlib.explain: which models, which images, tables.

Heatmaps, scores and the shortcut audit are cxrlib.explain's (Grad-CAM via tf-keras-vis,
LRP via iNNvestigate in a graph-mode worker process that loads ``model.h5``). Here: the choice
of models and images from the run config (``heatmap_fold``, ``heatmap_models``,
``select_images``, ``scored_count``, ``shown_positions``, ``marker_rows``, ``fold_test_rows``),
the explainer options of the ``heatmaps`` config block (``explainer_options``), and the
notebook's tables and picks (``display_maps``, ``fold_accuracy``, ``failure_cases``,
``audit_heatmaps``, ``ablation_table``, ``shortcut_table``).

Config keys of the ``heatmaps`` block read here: ``methods``, ``strategies``, ``fold``,
``n_images`` (images the grids show), ``n_scored`` (images explained and scored, ``all`` or a
count; default ``n_images``), ``min_cam_size`` (smallest Grad-CAM feature map side, see
``cxrlib.explain.gradcam.target_layer``), ``lrp`` (iNNvestigate analyzer parameters, e.g.
``{epsilon: 1.0e-7}``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib.report.plan import HOLDOUT, fold_ids

ALL = "all"  # heatmaps.n_scored: every scorable test image of the heatmap fold


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
    """{model: its transfer stage folder on :func:`heatmap_fold`}, the models notebook 5 explains.

    The ``heatmaps.strategies`` (keyed by strategy name), then, when the config has a
    ``shortcut_demo`` block (:mod:`cxrlib.report.shortcut`), the clean model ``shortcut_demo.clean``
    and the model trained on the text-shortcut twin side by side, the latter keyed
    ``shortcut/<strategy>`` (e.g. ``shortcut/twice``).
    """
    from cxrlib.report.plan import explained_strategies, fits
    from cxrlib.report.shortcut import SHORTCUT_PREFIX, shortcut_options

    cfg = ctx.cfg
    names = explained_strategies(cfg)
    lesson = shortcut_options(cfg)
    fold = heatmap_fold(cfg)
    on_fold = {f.strategy: f.path(ctx.run_dir) for f in fits(cfg) if f.fold == fold}
    out = {name: on_fold[name] for name in names if name in on_fold}  # config order, the lesson's clean model last
    if lesson is not None:
        for f in fits(cfg, kind=SHORTCUT_PREFIX):
            out[f"{SHORTCUT_PREFIX}/{f.strategy}"] = f.path(ctx.run_dir)
    return out


def select_images(target: pd.DataFrame, cfg: Mapping[str, Any], n: int | None = 8, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` test images of :func:`heatmap_fold`, spread over the classes with lesions.

    Images with a ground-truth mask are preferred (they can be scored); without masks in
    the data (real images) any test images are taken.

    Args:
        target: the run's target manifest (with ``fold`` or ``split``).
        cfg: resolved config.
        n: number of images; None: all of them, in manifest order (``heatmaps.n_scored: all``).
        seed: sampling seed.
    """
    fold = heatmap_fold(cfg)
    test = fold_test_rows(target, cfg)
    if "mask_path" in test.columns and (test["mask_path"] != "").any():
        # scorable images: a mask file and a lesion (normal images have none by definition)
        test = test[(test["mask_path"] != "") & (test["label"] != "normal")]
    if len(test) == 0:
        raise ValueError(f"no test image to explain on fold {fold}")
    if n is None:
        return test.reset_index(drop=True)
    return _spread(test, n, seed).reset_index(drop=True)


def _spread(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A sample of ``n`` of ``rows``, the same number per label (as far as each label has them)."""
    labels = list(dict.fromkeys(rows["label"]))
    per = max(1, math.ceil(n / len(labels)))
    parts = [rows[rows["label"] == c].sample(n=min(per, int((rows["label"] == c).sum())), random_state=seed)
             for c in labels]
    return pd.concat(parts).head(n)


def scored_count(hcfg: Mapping[str, Any]) -> int | None:
    """How many images notebook 5 explains and scores: ``heatmaps.n_scored``, None for ``all``.

    ``all`` scores every test image of the heatmap fold that has a lesion mask (the phantom
    demos: 45-54 images, where 16 would leave a 95 % interval of about +-0.5 x chance on the mass
    inside the lesion); an integer, that many spread over the classes. Without the key, the
    ``n_images`` the grid shows (8 by default) are the ones scored.

    Raises:
        ValueError: anything but ``all`` or a positive integer.
    """
    value = hcfg.get("n_scored", hcfg.get("n_images", 8))
    if value == ALL:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"heatmaps.n_scored must be {ALL!r} or a positive integer, got {value!r}")
    return value


def shown_positions(rows: pd.DataFrame, n: int, seed: int = 0) -> np.ndarray:
    """Positions in ``rows`` (the explained images) of the ``n`` images notebook 5's grids show.

    The same class-spread sample :func:`select_images` draws, so with ``n_scored: all`` the grid
    shows the images ``select_images(target, cfg, n)`` would pick. [n] int, in sample order.
    """
    return _spread(rows.reset_index(drop=True), n, seed).index.to_numpy()


def fold_test_rows(target: pd.DataFrame, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Test images of :func:`heatmap_fold` (the hold-out ``test`` split, or the fold)."""
    fold = heatmap_fold(cfg)
    if fold == HOLDOUT:
        return target[target["split"] == "test"].reset_index(drop=True)
    return target[target["fold"].astype(str) == str(fold)].reset_index(drop=True)


def marker_rows(target: pd.DataFrame, cfg: Mapping[str, Any], n: int = 4) -> pd.DataFrame:
    """Up to ``n`` test images of :func:`heatmap_fold` carrying the burnt-in text marker (may be empty)."""
    test = fold_test_rows(target, cfg)
    if "text_box" not in test.columns:
        return test.head(0)
    return test[test["text_box"].astype(str).str.strip() != ""].head(n).reset_index(drop=True)


def explainer_options(hcfg: Mapping[str, Any]) -> dict[str, Any]:
    """Explainer options of the ``heatmaps`` config block (``min_cam_size``, ``lrp`` parameters)."""
    options = dict(hcfg.get("lrp") or {})
    if hcfg.get("min_cam_size"):
        options["min_cam_size"] = int(hcfg["min_cam_size"])
    return options


def display_maps(heatmaps: Mapping[tuple[str, str], Any], pick: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """``{"model / method": [N, H, W] maps in [0, 1]}`` for ``plots.heatmap_grid`` column titles
    (only the images at positions ``pick`` when given)."""
    return {f"{model}\n{method}": h.display() if pick is None else h.display()[np.asarray(pick)]
            for (model, method), h in heatmaps.items()}


def fold_accuracy(models: Mapping[str, Path]) -> dict[str, float]:
    """Test accuracy of each explained model on its heatmap fold (its stage's ``metrics.json``);
    models without that file are left out."""
    from cxrlib.io import read_json
    from cxrlib.report.results import METRICS_FILE

    out = {}
    for name, folder in models.items():
        path = Path(folder) / METRICS_FILE
        if path.is_file():
            acc = (read_json(path).get("test") or {}).get("accuracy")
            if acc is not None:
                out[name] = float(acc)
    return out


def failure_cases(scores: pd.DataFrame, n: int = 3) -> tuple[tuple[str, str], list[str]]:
    """The best-localising ``(model, method)`` (highest mean ``mass_inside``) and its ``n`` worst images.

    A teacher shows these next to the good cases: where even the best heatmap misses the lesion.
    """
    mass = scores[scores["metric"] == "mass_inside"]
    best = mass.groupby(["model", "method"])["value"].mean().idxmax()
    rows = mass[(mass["model"] == best[0]) & (mass["method"] == best[1])]
    return best, rows.sort_values("value", na_position="first")["path"].head(n).tolist()


def audit_heatmaps(heatmaps: Mapping[tuple[str, str], Any], rows: pd.DataFrame, root, image_size: int) -> pd.DataFrame:
    """:func:`cxrlib.explain.shortcuts.shortcut_audit` of every ``(model, method)``, one table."""
    from cxrlib.explain.shortcuts import shortcut_audit

    return pd.concat([shortcut_audit(h.maps, rows, root, image_size, method=method, model=model)
                      for (model, method), h in heatmaps.items()], ignore_index=True)


def ablation_table(models: Mapping[str, Path], test: pd.DataFrame, root, image_size: int, backbone: str,
                   classes: Sequence[str], border: float = 0.1) -> pd.DataFrame:
    """Test accuracy of each model with the border, the burnt-in text (when present) and their
    same-size control regions masked out (``border_control``, ``text_control``).

    Uses :func:`cxrlib.explain.ablation.masked_accuracy` with
    :func:`cxrlib.explain.ablation.with_controls`; one row per model and region.
    """
    from cxrlib.data.pipeline import load_images
    from cxrlib.explain.ablation import masked_accuracy, with_controls
    from cxrlib.explain.shortcuts import border_mask, text_masks
    from cxrlib.models import load_model

    x = load_images(test, root, image_size, channels=3, backbone=backbone)  # [N, H, W, 3]
    labels = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    regions = {"border": border_mask(image_size, border)}
    if "text_box" in test.columns and (test["text_box"].astype(str).str.strip() != "").any():
        regions["text"] = text_masks(test, root, image_size)[0]
    regions = with_controls(regions)
    return pd.concat([masked_accuracy(load_model(Path(folder) / "model.h5"), x, labels, regions).assign(model=name)
                      for name, folder in models.items()], ignore_index=True)


def shortcut_table(audit: pd.DataFrame, ablation: pd.DataFrame, threshold: float = 2.0,
                   effect_threshold: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Notebook ``05_heatmaps``' shortcut evidence: (per model and region, per model verdict).

    The first table has, per model and region, the highest relevance ``enrichment`` over the
    methods (:func:`cxrlib.explain.shortcuts.audit_summary`) beside the flip rate of masking the
    region, of masking its control region and the excess
    (:func:`cxrlib.explain.ablation.region_effects`); the second is
    :func:`cxrlib.explain.shortcuts.shortcut_verdict` without external data (notebook
    ``07_external`` adds the external results).
    """
    from cxrlib.explain.shortcuts import audit_summary, region_effects, shortcut_verdict

    summary = audit_summary(audit, threshold=threshold)
    best = (summary.sort_values("enrichment", ascending=False).groupby(["model", "region"], as_index=False)
            .first()[["model", "region", "method", "enrichment"]])
    table = best.merge(region_effects(ablation), on=["model", "region"], how="outer").sort_values(["model", "region"])
    verdict = shortcut_verdict(summary, ablation, enrichment_threshold=threshold, effect_threshold=effect_threshold)
    return table.reset_index(drop=True), verdict


def own_rows(rows: pd.DataFrame, run_dir, model_key: str) -> pd.DataFrame:
    """``rows`` as the model ``model_key`` was trained on them: the same images, in the same order,
    from :func:`cxrlib.report.shortcut.model_manifest` (for a shortcut-lesson model the text-marked
    twin, whose files carry the same names under ``target_shortcut/``); ``rows`` itself otherwise."""
    from cxrlib.data.manifest import read_manifest
    from cxrlib.report.shortcut import model_manifest

    manifest = model_manifest(run_dir, model_key)
    if manifest.name == "target.csv":
        return rows
    twin = read_manifest(manifest)
    tail = lambda p: str(p).split("/", 1)[-1]  # noqa: E731  ("images/P00000_00.png")
    by_name = twin.set_index(twin["path"].map(tail))
    return by_name.loc[rows["path"].map(tail).tolist()].reset_index(drop=True)


def audit_and_ablate(models: Mapping[str, Path], heatmaps: Mapping[tuple[str, str], Any], rows: pd.DataFrame,
                     test: pd.DataFrame, run_dir, root, methods: Sequence[str], explain_dir, *,
                     classes: Sequence[str], image_size: int, backbone: str,
                     **explain_settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(shortcut audit, masking ablation) of every model on ITS OWN data (:func:`own_rows`).

    A model of the shortcut lesson learnt a text marker that its training images carry on one
    class; on the clean images the marker is not tied to the class, so it is audited (relevance
    on the text) and ablated (text masked vs a control region) on the twin's version of the same
    images. Clean models reuse ``heatmaps`` (computed on ``rows``), and share one ablation (the
    test images are loaded once for them).
    """
    from cxrlib.explain.batch import explain_models
    from cxrlib.report.shortcut import model_manifest

    audits = []
    by_manifest: dict[Path, dict[str, Path]] = {}  # models trained on the same manifest see the same test rows
    for key, path in models.items():
        mine = own_rows(rows, run_dir, key)
        maps = {k: h for k, h in heatmaps.items() if k[0] == key}
        if mine is not rows:
            maps = explain_models({key: path}, mine, root, Path(explain_dir) / key.replace("/", "_"), methods,
                                  classes=classes, image_size=image_size, backbone=backbone, **explain_settings)
        audits.append(audit_heatmaps(maps, mine, root, image_size))
        by_manifest.setdefault(model_manifest(run_dir, key), {})[key] = path
    ablation = pd.concat([ablation_table(group, own_rows(test, run_dir, next(iter(group))), root, image_size, backbone,
                                         classes) for group in by_manifest.values()], ignore_index=True)
    order = {key: i for i, key in enumerate(models)}  # one block per model, in the order of `models`
    ablation = ablation.sort_values("model", key=lambda m: m.map(order), kind="stable", ignore_index=True)
    return pd.concat(audits, ignore_index=True), ablation

"""The shortcut lesson's data: a text-shortcut twin of a run's prepared target manifest.

Bassi & Attux 2020 (arXiv 2005.01578) used LRP to show that COVID-19 classifiers can read the
words burnt into radiographs; DeGrave et al. 2021 (Nat. Mach. Intell. 3:610) showed such
shortcuts in published COVID-19 models. The lesson trains one model on the clean target and
one on its *twin*: :func:`cxrlib.data.phantoms.shortcut_twin` redraws the same phantoms with
the text marker correlated with the class at ``shortcut_strength``. Here the twin's manifest
keeps every decision the data stage made on the clean target (duplicates set aside, patient
groups, folds or split): only ``path`` (-> the twin's image), ``shortcut`` and ``text_box``
change, so the two models differ in nothing but what the text could teach them.

Read by :mod:`cxrlib.report.plan` (the extra ``03_transfer`` stage, kind ``shortcut``, kept out
of the comparison tables), notebook ``01_data`` (:func:`build_shortcut_twin`) and
:func:`cxrlib.report.heatmaps.heatmap_models`; what notebook ``05_heatmaps`` shows of the lesson
is in :mod:`cxrlib.report.lesson`. No TensorFlow import here, and nothing from the notebook
layers: the plan is built in every notebook and imports this module.

Config block (``shortcut_demo`` of an experiment YAML)::

    shortcut_demo: {strategy: twice, shortcut_strength: 1.0, clean: twice}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

SHORTCUT_MANIFEST = "target_shortcut"  # <01_data stage>/target_shortcut.csv, images under <data>/target_shortcut
SHORTCUT_PREFIX = "shortcut"  # stage kind of the lesson model, and its key prefix among the explained models
TWIN_COLUMNS = ("shortcut", "text_box")  # the only columns the twin changes (besides path)


def shortcut_options(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The validated ``shortcut_demo`` block of a config, or None when the lesson is off.

    Raises:
        ValueError: naming the key, for a strategy not among ``strategies``, a strength outside
            [0, 1] or a run that is not on phantoms (real images cannot be redrawn).
    """
    block = cfg.get("shortcut_demo")
    if not block:
        return None
    if not isinstance(block, Mapping):
        raise ValueError(f"shortcut_demo: expected a mapping, got {block!r}")
    strategies = cfg.get("strategies") or {}
    out = {"strategy": block.get("strategy"), "clean": block.get("clean", block.get("strategy")),
           "shortcut_strength": float(block.get("shortcut_strength", 1.0))}
    for key in ("strategy", "clean"):
        if out[key] not in strategies:
            raise ValueError(f"shortcut_demo.{key}: {out[key]!r} is not among strategies {list(strategies)}")
    if not 0.0 <= out["shortcut_strength"] <= 1.0:
        raise ValueError(f"shortcut_demo.shortcut_strength: {out['shortcut_strength']} outside [0, 1]")
    if (cfg.get("data") or {}).get("kind") != "phantoms":
        raise ValueError("shortcut_demo: needs data.kind 'phantoms' (the twin redraws the phantom images)")
    return out


def twin_manifest(target: pd.DataFrame, twin: pd.DataFrame, part: str = "target",
                  twin_part: str = SHORTCUT_MANIFEST) -> pd.DataFrame:
    """The prepared ``target`` rows pointing to the twin's images, with the twin's markers.

    Args:
        target: the data stage's prepared target manifest (paths ``<part>/images/...``).
        twin: the twin's own ``manifest.csv`` (paths relative to the twin folder).
        part: folder of the clean images under the run's data root.
        twin_part: folder of the twin under the same root.

    Raises:
        ValueError: a prepared row has no twin image (naming the first few).
    """
    prefix = f"{part}/"
    rel = target["path"].str.slice(len(prefix))
    if not target["path"].str.startswith(prefix).all():
        bad = target.loc[~target["path"].str.startswith(prefix), "path"].head(3).tolist()
        raise ValueError(f"target rows outside {prefix!r}: {bad}")
    by_path = twin.set_index("path")
    missing = rel[~rel.isin(by_path.index)]
    if len(missing):
        raise ValueError(f"{len(missing)} target image(s) have no twin, e.g. {missing.head(3).tolist()}")
    out = target.copy()
    out["path"] = [f"{twin_part}/{p}" for p in rel]
    for col in TWIN_COLUMNS:
        if col in by_path.columns:
            out[col] = by_path.loc[rel, col].to_numpy()
    if "mask_path" in out.columns:  # the lesions are the twin's too (identical pixels)
        out["mask_path"] = [f"{twin_part}/{m[len(prefix):]}" if m.startswith(prefix) else m
                            for m in out["mask_path"]]
    return out


def build_shortcut_twin(cfg: Mapping[str, Any], data_root: str | os.PathLike,
                        stage_dir: str | os.PathLike) -> Path | None:
    """Generate ``<data_root>/target_shortcut`` and write ``<stage_dir>/target_shortcut.csv``.

    Called by notebook ``01_data`` after the clean target is prepared (``target.csv`` exists).
    Returns the manifest path, or None when the config has no ``shortcut_demo``.
    """
    from cxrlib.data import manifest as mf
    from cxrlib.data.phantoms import shortcut_twin

    opts = shortcut_options(cfg)
    if opts is None:
        return None
    root, stage_dir = Path(data_root), Path(stage_dir)
    twin_csv = shortcut_twin(root / "target", root / SHORTCUT_MANIFEST, opts["shortcut_strength"])
    target = mf.read_manifest(stage_dir / "target.csv")
    out = twin_manifest(target, mf.read_manifest(twin_csv))
    path = stage_dir / f"{SHORTCUT_MANIFEST}.csv"
    mf.write_manifest(out, path)
    return path


def model_manifest(run_dir: str | os.PathLike, model_key: str) -> Path:
    """The target manifest a model of :func:`cxrlib.report.heatmaps.heatmap_models` was trained on.

    ``shortcut/<strategy>`` -> ``<run>/stages/01_data/target_shortcut.csv`` (its test images carry
    the text on the shortcut class, as in training); any other key -> ``target.csv``. Notebook 5
    should audit and ablate each model on its own manifest's test fold: on the clean images the
    marker is uncorrelated with the class, so masking it cannot show what the shortcut model
    learnt (measured in the quick demo: accuracy lost when the text is masked, clean test images,
    shortcut model 0.038 vs clean model 0.013).
    """
    stem = SHORTCUT_MANIFEST if model_key.startswith(f"{SHORTCUT_PREFIX}/") else "target"
    return Path(run_dir) / "stages" / "01_data" / f"{stem}.csv"

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
:func:`cxrlib.report.heatmaps.heatmap_models`. Notebook ``05_heatmaps``' lesson section uses
:func:`lesson_models`, :func:`lesson_rows` (both models on the same test images carrying the
word), :func:`lesson_audit` (their text relevance on those images), :func:`lesson_table` (the two
verdicts side by side) and :func:`lesson_sentence` (what a teacher reads out). No TensorFlow
import here: the plan is built in every notebook.

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


# ----------------------------------------------------------------------------- notebook 5's lesson
def lesson_models(models: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{clean key: folder, shortcut/<strategy>: folder}`` of :func:`cxrlib.report.heatmaps.heatmap_models`
    (clean first), or {} when the config has no ``shortcut_demo``."""
    opts = shortcut_options(cfg)
    if opts is None:
        return {}
    keys = [opts["clean"], f"{SHORTCUT_PREFIX}/{opts['strategy']}"]
    missing = [k for k in keys if k not in models]
    if missing:
        raise ValueError(f"shortcut lesson: model(s) {missing} not among the explained models {list(models)}")
    return {k: models[k] for k in keys}


def lesson_rows(run_dir: str | os.PathLike, cfg: Mapping[str, Any], n: int = 16) -> pd.DataFrame:
    """Up to ``n`` test images of the heatmap fold that carry the text in the twin (the shortcut
    class, e.g. COVID-19), as rows of the twin's manifest: both lesson models are explained on
    these same pixels, the clean one sees the word too (its training images had it at random)."""
    from cxrlib.data.manifest import read_manifest
    from cxrlib.report.heatmaps import marker_rows

    twin = read_manifest(Path(run_dir) / "stages" / "01_data" / f"{SHORTCUT_MANIFEST}.csv")
    return marker_rows(twin, cfg, n=n)


LESSON_IMAGES = 16  # test images with the word audited per lesson model: one Grad-CAM batch


def lesson_audit(audit: pd.DataFrame, lesson_maps: Mapping[tuple[str, str], Any], marked: pd.DataFrame,
                 root, image_size: int) -> pd.DataFrame:
    """``audit`` with the lesson models' ``text`` rows replaced by their relevance on ``marked``.

    :func:`cxrlib.report.heatmaps.audit_and_ablate` audits the text on the few lesion images
    that carry it (4 of the 8 in the quick demo: one Grad-CAM map more or less on the word moves
    the enrichment by a third); the lesson audits it on :func:`lesson_rows` (up to
    :data:`LESSON_IMAGES`), the images of the side-by-side figure.

    Args:
        audit: :func:`~cxrlib.report.heatmaps.audit_and_ablate`'s audit (all models, border and text).
        lesson_maps: ``{(model, method): Heatmaps}`` of the lesson models on ``marked``.
        marked: :func:`lesson_rows`.
        root, image_size: data root and model input size.
    """
    from cxrlib.report.heatmaps import audit_heatmaps

    new = audit_heatmaps(lesson_maps, marked, root, image_size)
    new = new[new["region"] == "text"]
    lesson = {model for model, _ in lesson_maps}
    keep = ~(audit["model"].isin(lesson) & (audit["region"] == "text"))
    return pd.concat([audit[keep], new], ignore_index=True)


def _test_accuracy(folder) -> float:
    from cxrlib.io import read_json

    metrics = read_json(Path(folder) / "metrics.json", default={})
    return float((metrics.get("test") or {}).get("accuracy", float("nan")))


def lesson_table(lesson: Mapping[str, Any], effects: pd.DataFrame, verdict: pd.DataFrame,
                 region: str = "text") -> pd.DataFrame:
    """The two lesson models side by side: what each was trained on, its test accuracy (on its own
    test images), the relevance on the text (highest enrichment over the methods), the flips of
    masking the text vs its control region, and the verdict.

    Args:
        lesson: :func:`lesson_models`.
        effects, verdict: the two tables of :func:`cxrlib.report.heatmaps.shortcut_table`.
        region: the audited region of the lesson.
    """
    rows = []
    for key, folder in lesson.items():
        e = effects[(effects["model"] == key) & (effects["region"] == region)]
        v = verdict[verdict["model"] == key]
        e = e.iloc[0] if len(e) else {}
        rows.append({
            "model": key,
            "trained on": ("text on every image of the shortcut class, none elsewhere"
                           if key.startswith(f"{SHORTCUT_PREFIX}/") else "text at random (no correlation)"),
            "test accuracy": _test_accuracy(folder),
            f"{region} enrichment": e.get("enrichment", float("nan")),
            "method": e.get("method", ""),
            "n masked": e.get("n_masked", 0),
            f"flips, {region} masked": e.get("flips", float("nan")),
            "flips, control masked": e.get("flips_control", float("nan")),
            "verdict": v["verdict"].iloc[0] if len(v) else "not audited",
        })
    return pd.DataFrame(rows)


def lesson_sentence(table: pd.DataFrame, text: str = "PORTABLE", region: str = "text") -> str:
    """What a teacher reads out under :func:`lesson_table` (numbers from the table)."""
    if len(table) != 2:
        return ""
    clean, cut = table.iloc[0], table.iloc[1]

    def pct(x):
        return "n/a" if pd.isna(x) else f"{x:.0%}"

    def num(x, f="{:.2f}"):
        return "n/a" if pd.isna(x) else f.format(x)

    better = "better than" if cut["test accuracy"] > clean["test accuracy"] else "about as good as"
    return (
        f"Both models saw the same patients, lesions and pixels; only the word differs. In the images of "
        f"**{cut['model']}** the word {text} is burnt in on every COVID-19 image and on no other, in "
        f"its test images too, so its test accuracy ({num(cut['test accuracy'])}) looks {better} the "
        f"clean model's ({num(clean['test accuracy'])}): the test set rewards reading the word. Masking the "
        f"word changes {pct(cut[f'flips, {region} masked'])} of its predictions on the "
        f"{int(cut['n masked'])} labelled test images, against {pct(cut['flips, control masked'])} when a "
        f"box of the same size on the other shoulder is masked, and its heatmaps put "
        f"{num(cut[f'{region} enrichment'], '{:.1f}')}x the area's share of relevance on the word "
        f"(verdict: *{cut['verdict']}*). The clean model: {num(clean[f'{region} enrichment'], '{:.1f}')}x, "
        f"{pct(clean[f'flips, {region} masked'])} vs {pct(clean['flips, control masked'])} "
        f"(verdict: *{clean['verdict']}*). A hospital that writes {text} on every bedside film would get "
        "COVID-19 for all of them from the shortcut model: a good test score does not show what a model reads.")

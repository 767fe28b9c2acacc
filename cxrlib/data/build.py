"""Build the experiment manifests in ``data_manifests/`` from a data root of downloaded datasets.

A *recipe* says which classes of a task are taken from which collections (the papers took
COVID-19 images from the public COVID collections and the other classes from NIH or
Kermany). Collections are found by their published folder names
(:mod:`cxrlib.data.adapters.collections`). Each recipe becomes a
:class:`cxrlib.data.prepare.Plan` and goes through the one preparation path
(:func:`cxrlib.data.prepare.prepare`: adapters, duplicates, patient groups, hold-out
train/val/test plus k folds, leakage check), the same as a run's data stage; this module writes:

- ``<name>.csv`` the manifest (paths relative to the data root),
- ``<name>.skipped.csv`` every row left out, with its reason (adapter skips, classes not
  taken from that source, duplicates removed),
- ``README.md`` (regenerated) with what was built from what, counts and skips.

Run ``cxr data build-manifests DATA_ROOT`` (see ``cxr data build-manifests -h``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrlib.data.adapters.collections import COLLECTIONS, find_collection, tried_names
from cxrlib.data.dedup import DEFAULT_MAX_DISTANCE, DEFAULT_MIN_CORRELATION
from cxrlib.data.manifest import write_manifest
from cxrlib.data.prepare import Entry, Plan, prepare
from cxrlib.data.splits import group_keys
from cxrlib.data.taxonomy import is_multilabel
from cxrlib.io import write_csv, write_text

COVID_COLLECTIONS = ("covid-chestxray", "figure1", "actualmed")


@dataclass(frozen=True)
class Slot:
    """Classes taken from sources: every present source (``mode='all'``) or the first present."""

    classes: tuple[str, ...]  # () = every class (multi-label task)
    sources: tuple[str, ...]
    mode: str = "all"


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    slots: tuple[Slot, ...]
    description: str


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("source_nih14", "nih14", (Slot((), ("nih",)),),
           "Source domain: every NIH ChestX-ray14 image, 14 findings, multi-label."),
    Recipe("paper_a", "paper_a",
           (Slot(("covid19",), COVID_COLLECTIONS),
            Slot(("normal", "pneumonia", "other_disease"), ("nih",))),
           "Basu et al. 2020 target domain: COVID-19 from the public COVID collections; normal, "
           "pneumonia and other disease from NIH ChestX-ray14."),
    Recipe("paper_b", "paper_b",
           (Slot(("covid19",), COVID_COLLECTIONS),
            Slot(("normal", "pneumonia"), ("kermany", "nih"), mode="first")),
           "Bassi & Attux 2020: COVID-19 from the public COVID collections; normal and pneumonia "
           "from the Kermany pediatric set as in the paper, or from NIH when Kermany is absent."),
    Recipe("paper_b_viral", "paper_b_viral",
           (Slot(("covid19",), COVID_COLLECTIONS),
            Slot(("viral_pneumonia",), ("kermany", "covid-chestxray"), mode="first"),
            Slot(("normal",), ("kermany", "nih"), mode="first")),
           "Paper B, strict reading (viral pneumonia only): COVID-19 from the COVID collections; viral "
           "pneumonia from Kermany (virus files) or, when absent, the Cohen collection's viral "
           "pneumonias; normal from Kermany or NIH."),
)}


@dataclass
class BuildResult:
    recipe: Recipe
    manifest: pd.DataFrame
    skipped: pd.DataFrame
    pairs: pd.DataFrame
    sources: dict[str, str]  # collection -> folder relative to the data root
    notes: list[str] = field(default_factory=list)


def recipe_plan(recipe: Recipe, data_root: Path, datasets: dict[str, str] | None = None, seed: int = 0,
                folds: int = 5, test_size: float = 0.2, val_size: float = 0.1) -> tuple[Plan, list[str]]:
    """The :class:`~cxrlib.data.prepare.Plan` of a recipe over the collections present (and notes).

    A slot in ``mode='first'`` takes the first of its collections found (published folder
    names or ``datasets`` overrides); ``mode='all'`` takes every one found.
    """
    datasets = datasets or {}
    plan: dict[str, set[str]] = {}  # collection -> classes taken from it (empty set = all)
    notes = []
    for slot in recipe.slots:
        present = [s for s in slot.sources
                   if find_collection(data_root, s, datasets.get(s), required=False) is not None]
        if slot.mode == "first":
            present = present[:1]
        if not present:
            notes.append(f"no collection for {', '.join(slot.classes) or 'all classes'} "
                         f"(looked for {', '.join(slot.sources)})")
        for source in present:
            plan.setdefault(source, set()).update(slot.classes)
    if not plan:
        names = "; ".join(f"{s}: {', '.join(tried_names(s))}" for slot in recipe.slots for s in slot.sources)
        raise FileNotFoundError(f"{recipe.name}: no collection found under {data_root} (folder names tried: "
                                f"{names}); give folders with --dataset KEY=PATH")
    entries = [Entry(s, COLLECTIONS[s].adapter, recipe.task, classes=tuple(sorted(c))) for s, c in plan.items()]
    return Plan(task=recipe.task, target=entries, folds=folds, test_size=test_size, val_size=val_size, seed=seed,
                prefer=tuple(plan), datasets={k: v for k, v in datasets.items() if k in plan},
                name=recipe.name), notes


def build_recipe(recipe: Recipe, data_root: Path, datasets: dict[str, str] | None = None, seed: int = 0,
                 folds: int = 5, test_size: float = 0.2, val_size: float = 0.1,
                 hashes: dict | None = None) -> BuildResult:
    """Build one recipe's manifest through :func:`cxrlib.data.prepare.prepare`.

    Args:
        recipe: what to take from where.
        data_root: root the manifest paths are relative to.
        datasets: collection -> folder overrides (``--dataset nih=/mnt/nih``).
        seed, folds, test_size, val_size: split settings.
        hashes: path -> (sha1, phash) cache shared between recipes.
    """
    plan, notes = recipe_plan(recipe, data_root, datasets, seed, folds, test_size, val_size)
    prep = prepare(plan, data_root, hashes=hashes, progress=True)
    return BuildResult(recipe, prep.target, prep.set_aside, prep.pairs, prep.folders, notes + prep.notes)


def build_all(data_root, out_dir, recipes=None, seed: int = 0, folds: int = 5, test_size: float = 0.2,
              val_size: float = 0.1, datasets: dict[str, str] | None = None, log=print) -> list[BuildResult]:
    """Build every recipe, write ``<name>.csv``, ``<name>.skipped.csv`` and ``README.md``.

    Args:
        data_root: folder holding the downloaded collections.
        out_dir: output folder (``data_manifests/``).
        recipes: names from :data:`RECIPES` (default all).
        seed, folds, test_size, val_size: split settings.
        datasets: collection -> folder, for collections stored elsewhere or under other names.
        log: printer for progress lines.
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    if not data_root.is_dir():
        raise FileNotFoundError(f"data root not found: {data_root}")
    names = list(recipes or RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    bad = sorted(set(datasets or {}) - set(COLLECTIONS))
    if bad:
        raise ValueError(f"--dataset {bad}: unknown collection; known: {', '.join(COLLECTIONS)}")
    hashes: dict = {}
    results = []
    for name in names:
        res = build_recipe(RECIPES[name], data_root, datasets, seed, folds, test_size, val_size, hashes)
        write_manifest(res.manifest, out_dir / f"{name}.csv")
        write_csv(out_dir / f"{name}.skipped.csv", res.skipped, index=False)
        log(f"{name}: {len(res.manifest)} images, {res.manifest['patient_group'].nunique()} patient groups, "
            f"{len(res.skipped)} set aside -> {out_dir / (name + '.csv')}")
        results.append(res)
    settings = dict(seed=seed, folds=folds, test_size=test_size, val_size=val_size)
    write_text(out_dir / "README.md", render_readme(results, data_root, settings))
    return results


def _table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (index included)."""
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row]) + " |")
    return "\n".join(lines)


def render_readme(results: list[BuildResult], data_root: Path, settings: dict) -> str:
    """The generated ``data_manifests/README.md``."""
    from cxrlib.data.splits import split_summary

    opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items() if k != "folds")
    parts = [
        "# data_manifests",
        "",
        "Generated by `cxr data build-manifests DATA_ROOT -o data_manifests "
        f"--folds {settings['folds']} {opts}` (module `cxrlib.data.build`); do not edit by hand.",
        f"This build used the data root `{data_root}`. "
        "Paths are relative to the data root: pass it as `--root` / `root=` when reading.",
        "",
        "How every manifest is built: adapters read each collection in its published layout "
        "(`cxrlib/data/adapters/`), labels come from `cxrlib/data/label_map.csv`, each recipe keeps the "
        "classes it takes from each collection, images are hashed (`sha1`, `phash`), duplicates are removed "
        "(exact SHA-1 copies and near copies: phash within "
        f"{DEFAULT_MAX_DISTANCE} bits verified by thumbnail correlation >= {DEFAULT_MIN_CORRELATION}; "
        "see `cxrlib/data/dedup.py`), then rows are split by patient (source, patient_id) with "
        "scikit-learn's StratifiedGroupKFold (patients that share a duplicate image, e.g. one image "
        "published under two patient ids or in two collections, form one group: column `patient_group`): "
        "`split` = hold-out train/val/test, `fold` = "
        f"{settings['folds']}-fold cross-validation over all rows. The leakage check "
        "(`cxr data check`) passes on every file. `<name>.skipped.csv` lists every row left out, "
        "with its reason.",
        "",
        "Why near duplicates are verified on pixels (measured on the sample data, 2,204 images incl. "
        "`fullres-sample/`): chest radiographs look alike to a 64-bit perceptual hash. Two different NIH "
        "patients' images are 2 bits apart (00005228_002 / 00018145_000), 7 different-patient NIH pairs are "
        "within 4 bits, and NIH images come within 4-6 bits of Cohen COVID images, so a hash threshold "
        "alone either misses copies or merges distinct patients. The Pearson correlation of 32x32 "
        "thumbnails separates them: at most 0.963 over 16,824 known-distinct pairs within 12 bits, "
        ">= 0.9997 for the 26 full-resolution vs 256 px copies, 0.978-1.0 for copies confirmed by eye "
        "(re-contrasted or re-labelled, 0-4 bits apart). Found in this data: one image published in both "
        "the Cohen and the Figure 1 collections (9C34AF49-...jpeg = COVID-00022.jpg), copies inside the "
        "Cohen collection under two patient ids (AR-1.jpg of patient 192 = extubation-1.jpg of patient "
        "196; covid-19-rapidly-progressive-...-admission/day-1/2/3.jpg = 16660_2..5_1.jpg), two Figure 1 "
        "ids with the same image (COVID-00033/00037) and one byte-identical NIH pair "
        "(00002658_001/_002, same patient).",
        "",
    ]
    for res in results:
        m = res.manifest
        parts += [f"## {res.recipe.name}.csv", "", res.recipe.description, "",
                  f"- task `{res.recipe.task}`; collections used: "
                  + ", ".join(f"`{s}` (`{d}/`)" for s, d in res.sources.items()),
                  f"- {len(m)} images, {group_keys(m).nunique()} patients; duplicate pairs found: "
                  f"{len(res.pairs)} ({(res.pairs['source_a'] != res.pairs['source_b']).sum()} across sources)"]
        parts += [f"- note: {n}" for n in res.notes]
        for pr in res.pairs.itertuples():
            corr = "" if pd.isna(pr.correlation) else f", correlation {pr.correlation}"
            parts.append(f"- duplicate ({pr.kind}, {pr.distance} bits{corr}): `{pr.path_a}` = `{pr.path_b}`")
        if is_multilabel(res.recipe.task):
            counts = m["findings"].str.split("|").explode().value_counts()
            parts += ["", "Findings (multi-label): " + ", ".join(f"{k} {v}" for k, v in counts.items())]
        summary = split_summary(m, "split" if "split" in m.columns else "fold")
        parts += ["", _table(summary), "", "Skipped rows by reason:", ""]
        reasons = res.skipped.groupby(["source", "reason"]).size().rename("rows").reset_index()
        parts += [f"- {r.source}: {r.reason}: {r.rows}" for r in reasons.itertuples()] or ["- none"]
        parts.append("")
    return "\n".join(parts)

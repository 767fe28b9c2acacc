"""Phantom data sets: patients, classes, images, masks and a manifest like the real data's.

Part of :mod:`cxrlib.data.phantoms`. :func:`generate_phantoms` writes PNG images, lesion masks,
``manifest.csv`` (the schema of :mod:`cxrlib.data.manifest`, as for NIH ChestX-ray14 and the COVID
collections) and ``phantoms.json``; the same arguments give byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image
from scipy import ndimage

from cxrlib.data.manifest import new_manifest, write_manifest
from cxrlib.data.phantoms.anatomy import sample_patient, sample_view
from cxrlib.data.phantoms.findings import COVID_FINDING, NO_FINDING, OTHER_FINDINGS, _code
from cxrlib.data.phantoms.markers import SHORTCUT_TEXT, burn_markers
from cxrlib.data.phantoms.render import render_phantom
from cxrlib.data.taxonomy import NIH_FINDINGS, normalize_task, task_classes
from cxrlib.io import atomic_path, read_json, write_json

PHANTOM_VERSION = 1
_NAME_PREFIX = "P"  # image files are P<patient>_<k>.png


def _domain(task: str) -> str:
    return "source" if task == "nih14" else "target"


def _plan_patients(rng, n, classes, ipp, fractions):
    """Assign image counts to patients and patients to classes (balanced by image count)."""
    lo, hi = ipp
    target = np.array([fractions.get(c, 0.0) for c in classes], dtype=float)
    target = target / target.sum()
    counts = np.zeros(len(classes))
    plan, total = [], 0
    while total < n:
        k = int(min(rng.integers(lo, hi + 1), n - total))
        deficit = target * (total + k) - counts
        order = rng.permutation(len(classes))
        c = int(order[np.argmax(deficit[order])])
        plan.append((c, k))
        counts[c] += k
        total += k
    return plan


def _pick_findings(rng, pool, k, used, weight=1):
    """k distinct findings from ``pool``, favouring rarely used ones (balanced prevalence).

    ``used`` counts images per finding so far; ``weight`` is this patient's image count.
    """
    chosen = []
    for _ in range(k):
        cand = [f for f in pool if f not in chosen]
        w = np.array([1.0 / (1.0 + used.get(f, 0)) ** 3 for f in cand])
        f = cand[int(rng.choice(len(cand), p=w / w.sum()))]
        chosen.append(f)
    for f in chosen:
        used[f] = used.get(f, 0) + weight
    return sorted(chosen, key=NIH_FINDINGS.index)


def _validate_args(task, n, image_size, shortcut_strength, ipp, shortcut_base_rate, classes, shortcut_class):
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}")
    if not 0.0 <= float(shortcut_strength) <= 1.0:
        raise ValueError(f"shortcut_strength must be in [0, 1], got {shortcut_strength!r}")
    if shortcut_base_rate is not None and not 0.0 <= float(shortcut_base_rate) <= 1.0:
        raise ValueError(f"shortcut_base_rate must be in [0, 1], got {shortcut_base_rate!r}")
    if len(ipp) != 2 or int(ipp[0]) < 1 or int(ipp[1]) < int(ipp[0]):
        raise ValueError(f"images_per_patient must be (min, max) with 1 <= min <= max, got {ipp!r}")
    if shortcut_class not in classes:
        raise ValueError(f"shortcut_class {shortcut_class!r} is not a class of task {task!r}: {list(classes)}")


def generate_phantoms(
    out_dir: str | os.PathLike,
    task: str,
    n: int,
    seed: int = 0,
    image_size: int = 128,
    shortcut_strength: float = 0.0,
    images_per_patient: tuple[int, int] = (1, 3),
    shortcut_class: str | None = None,
    shortcut_base_rate: float | None = None,
    shortcut_text: str = SHORTCUT_TEXT,
    lr_marker_rate: float = 0.6,
    class_fractions: Mapping[str, float] | None = None,
    conspicuity: float = 1.0,
) -> Path:
    """Generate a phantom chest X-ray dataset: PNG images, lesion masks and a manifest.

    Writes ``out_dir/images/P<patient>_<k>.png`` (8-bit gray), ``out_dir/masks/...png``
    (0/255), ``out_dir/manifest.csv`` and ``out_dir/phantoms.json``. Deterministic: the same
    arguments give byte-identical files. See the module docstring for what is drawn and for
    the exact shortcut rule.

    Args:
        out_dir: output folder (the data root of the manifest's paths).
        task: ``source`` (= ``nih14``, multi-label NIH findings), ``paper_a``, ``paper_b`` or
            ``paper_b_viral`` (``-`` and ``_`` both accepted).
        n: number of images.
        seed: random seed.
        image_size: side of the square images in pixels.
        shortcut_strength: p in [0, 1], the phi correlation between the text marker and
            ``shortcut_class`` (0 = uncorrelated marker).
        images_per_patient: (min, max) images per patient, inclusive.
        shortcut_class: class tied to the marker; default ``covid19`` (targets) or the finding
            ``Pneumonia`` (source).
        shortcut_base_rate: marker probability when the image is not tied (default: the
            prevalence of ``shortcut_class``, which makes the phi correlation equal p).
        shortcut_text: the marker's letters.
        lr_marker_rate: fraction of images with an (uncorrelated) "L"/"R" laterality marker.
        class_fractions: wanted fraction of images per class (target tasks; default equal);
            in the source task the fraction of ``No Finding`` images is 0.25.
        conspicuity: multiplier of every lesion's attenuation (1 = the calibrated default with
            subtle cases; the quick demo uses more so that small models at 48 px learn in a few
            epochs). Changes the pixels of abnormal images only, never a mask or a label.

    Returns:
        Path of the written manifest.csv.
    """
    canon = normalize_task(task)
    domain = _domain(canon)
    multi = canon == "nih14"
    classes = task_classes(canon)
    if shortcut_class is None:
        shortcut_class = "Pneumonia" if multi else "covid19"
    if not isinstance(conspicuity, (int, float)) or not 0.0 < float(conspicuity) <= 10.0:
        raise ValueError(f"conspicuity must be a number in (0, 10], got {conspicuity!r}")
    _validate_args(task, n, image_size, shortcut_strength, tuple(images_per_patient), shortcut_base_rate,
                   NIH_FINDINGS if multi else classes, shortcut_class)
    if class_fractions is not None:
        unknown = set(class_fractions) - set(classes)
        if unknown or multi:
            raise ValueError(f"class_fractions: unknown classes {sorted(unknown)} for task {task!r}" if unknown
                             else "class_fractions applies to the single-label target tasks only")
        if any(float(f) < 0 for f in class_fractions.values()) or sum(map(float, class_fractions.values())) <= 0:
            raise ValueError(f"class_fractions must be >= 0 with a positive sum, got {dict(class_fractions)}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)

    tcode = _code(canon)
    plan_rng = np.random.default_rng([seed, tcode, 0])
    if multi:
        plan = _plan_patients(plan_rng, n, ("none", "finding"), images_per_patient, {"none": 0.25, "finding": 0.75})
    else:
        fr = dict(class_fractions) if class_fractions else {c: 1.0 for c in classes}
        plan = _plan_patients(plan_rng, n, classes, images_per_patient, fr)

    # patient-level content: findings / class, anatomy
    used: dict[str, int] = {}
    patients = []
    for pi, (c, k) in enumerate(plan):
        prng = np.random.default_rng([seed, tcode, 1, pi])
        anat = sample_patient(prng, domain)
        subtype = ""
        if multi:
            findings = [] if c == 0 else _pick_findings(plan_rng, NIH_FINDINGS, int(plan_rng.choice([1, 1, 1, 2, 2, 3])), used, k)
            label = ""
        else:
            label = classes[c]
            if label == "normal":
                findings = []
            elif label == "covid19":
                findings = [COVID_FINDING]
            elif label in ("pneumonia", "viral_pneumonia"):
                findings = ["Pneumonia"]
            else:  # other_disease
                findings = _pick_findings(plan_rng, OTHER_FINDINGS, int(plan_rng.choice([1, 1, 2])), used, k)
        if "Pneumonia" in findings:
            subtype = "viral" if (label == "viral_pneumonia" or prng.random() < 0.5) else "bacterial"
        patients.append(dict(pid=f"{_NAME_PREFIX}{pi:05d}", k=k, findings=findings, label=label,
                             anat=anat, subtype=subtype))

    def tied(p):  # is the image in the shortcut class?
        return (shortcut_class in p["findings"]) if multi else (p["label"] == shortcut_class)

    prevalence = sum(p["k"] for p in patients if tied(p)) / n
    base = prevalence if shortcut_base_rate is None else float(shortcut_base_rate)

    rows, idx, written = [], 0, set()
    for p in patients:
        for j in range(p["k"]):
            irng = np.random.default_rng([seed, tcode, 2, idx])
            view = sample_view(irng, domain)
            ph = render_phantom(p["anat"], view, p["findings"], image_size, seed=int(irng.integers(2**31)),
                                subtype=p["subtype"], conspicuity=float(conspicuity))
            # shortcut and laterality markers: their own stream (p changes nothing else)
            mrng = np.random.default_rng([seed, tcode, 3, idx])
            image = ph.image
            draw, text_box, lr_box = burn_markers(image, tied(p), mrng, shortcut_strength, base, lr_marker_rate,
                                                  shortcut_text)
            name = f"{p['pid']}_{j:02d}.png"
            _save_png(image, out_dir / "images" / name)
            _save_png(ph.mask.astype(np.uint8) * 255, out_dir / "masks" / name)
            written.add(name)
            rows.append(dict(
                path=f"images/{name}", patient_id=p["pid"], source=f"phantom-{canon}", view=ph.view,
                findings="|".join(p["findings"]) or NO_FINDING, label=p["label"], mask_path=f"masks/{name}",
                shortcut="1" if draw else "0", text_box=text_box, age=str(p["anat"]["age"] + j // 2),
                sex=p["anat"]["sex"], lr_box=lr_box, ctr=f"{ph.ctr:.3f}", subtype=p["subtype"],
            ))
            idx += 1
    _remove_stale(out_dir, written)
    manifest = write_manifest(new_manifest(rows), out_dir / "manifest.csv")
    meta = dict(version=PHANTOM_VERSION, task=canon, n=n, seed=seed, image_size=image_size,
                shortcut_strength=shortcut_strength, shortcut_class=shortcut_class, shortcut_base_rate=base,
                shortcut_text=shortcut_text, lr_marker_rate=lr_marker_rate,
                images_per_patient=list(images_per_patient), patients=len(patients),
                class_fractions=dict(class_fractions) if class_fractions else None, conspicuity=conspicuity)
    write_json(out_dir / "phantoms.json", meta)
    return manifest


def shortcut_twin(phantom_dir: str | os.PathLike, out_dir: str | os.PathLike, shortcut_strength: float = 1.0,
                  **changes) -> Path:
    """The same phantom data set with a different text-shortcut strength (the shortcut lesson's pair).

    Regenerates the data set described by ``phantom_dir/phantoms.json`` into ``out_dir`` with
    ``shortcut_strength`` (and any other ``changes``). Because the markers use their own random
    stream, the twin has the same patients, labels, lesions and pixels everywhere except the
    burnt-in text: a model trained on each, on the same split, differs only in what the text
    could teach it (DeGrave et al. 2021; Bassi & Attux 2020, LRP on words in X-rays).

    Args:
        phantom_dir: folder written by :func:`generate_phantoms` (has ``phantoms.json``).
        out_dir: folder of the twin (must differ from ``phantom_dir``).
        shortcut_strength: p of the twin (1 = the marker is drawn exactly on the shortcut class).
        **changes: other arguments of :func:`generate_phantoms` to change.

    Returns:
        Path of the twin's manifest.csv.
    """
    src, out = Path(phantom_dir), Path(out_dir)
    if src.resolve() == out.resolve():
        raise ValueError(f"{out}: the twin must go to another folder than {src}")
    meta_path = src / "phantoms.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not a phantom data set (no phantoms.json)")
    meta = read_json(meta_path)
    if meta.get("version") != PHANTOM_VERSION:
        raise ValueError(f"{meta_path}: phantom version {meta.get('version')!r}, this cxrlib draws "
                         f"version {PHANTOM_VERSION}; regenerate the data set")
    args = dict(task=meta["task"], n=meta["n"], seed=meta["seed"], image_size=meta["image_size"],
                shortcut_class=meta["shortcut_class"], shortcut_text=meta["shortcut_text"],
                lr_marker_rate=meta["lr_marker_rate"], images_per_patient=tuple(meta["images_per_patient"]),
                class_fractions=meta.get("class_fractions"), conspicuity=meta.get("conspicuity", 1.0))
    # keep the marker rate of the original: its base rate was the class prevalence unless set
    args["shortcut_base_rate"] = meta["shortcut_base_rate"]
    unknown = set(changes) - set(args)
    if unknown:
        raise ValueError(f"shortcut_twin: unknown change(s) {sorted(unknown)}; known: {sorted(args)}")
    args.update(changes)
    return generate_phantoms(out, shortcut_strength=shortcut_strength, **args)


def _save_png(arr: np.ndarray, path: Path) -> None:
    """Atomic PNG write (a crash never leaves a truncated image)."""
    with atomic_path(path) as tmp:
        Image.fromarray(arr, mode="L").save(tmp, format="PNG", compress_level=4)


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete phantom PNGs of an earlier, larger run in the same folder (only ours)."""
    if not (out_dir / "phantoms.json").is_file():
        return
    for sub in ("images", "masks"):
        for f in (out_dir / sub).glob(f"{_NAME_PREFIX}[0-9]*_[0-9]*.png"):
            if f.name not in keep:
                f.unlink()


def contact_sheet(manifest_path: str | os.PathLike, out_png: str | os.PathLike, per_group: int = 4,
                  group_col: str = "label", show_masks: bool = True) -> Path:
    """Save a grid of example images (one row per class or finding) with mask outlines.

    Args:
        manifest_path: a phantom (or any) manifest with ``mask_path``.
        out_png: output PNG.
        per_group: images per row.
        group_col: ``label`` (targets) or ``findings`` (source).
        show_masks: outline the lesion mask in the right half of each tile pair.
    """
    from cxrlib.data.manifest import read_manifest

    df = read_manifest(manifest_path)
    root = Path(manifest_path).parent
    rows = []
    for _, g in df.groupby(group_col, sort=True):
        tiles = []
        for _, r in g.head(per_group).iterrows():
            im = np.asarray(Image.open(root / r["path"]).convert("L"))
            tile = np.stack([im] * 3, -1)
            if show_masks and r.get("mask_path"):
                m = np.asarray(Image.open(root / r["mask_path"])) > 0
                edge = m & ~ndimage.binary_erosion(m)
                tile = tile.copy()
                tile[edge] = (255, 40, 40)
            tiles.append(tile)
        while len(tiles) < per_group:
            tiles.append(np.zeros_like(tiles[0]))
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    Image.fromarray(sheet.astype(np.uint8)).save(out_png)
    return Path(out_png)

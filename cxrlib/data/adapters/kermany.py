"""Pediatric pneumonia chest X-rays (Kermany et al., Cell 2018), Guangzhou Women and
Children's Medical Center.

Dataset: https://data.mendeley.com/datasets/rscbjbr9sj (v2/v3, ``ChestXRay2017.zip``) and the
Kaggle copy https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia.

Published layout (possibly nested, e.g. ``chest_xray/chest_xray/`` or ``CellData/chest_xray/``)::

    root/train|test|val/NORMAL/IM-0115-0001.jpeg, NORMAL2-IM-1427-0001.jpeg
    root/train|test|val/PNEUMONIA/person1_bacteria_1.jpeg, person1_virus_6.jpeg

Labels come from the file names: ``bacteria`` or ``virus`` in PNEUMONIA files, NORMAL folder.
Patient ids are derived from the file names, since none are published separately:
``personN`` for pneumonia files (the same ``personN`` appears with bacteria and virus
files, so it is one id space) and the study prefix for normal files (``IM-0115`` of
``IM-0115-0001.jpeg``, ``NORMAL2-IM-1427`` of ``NORMAL2-IM-1427-0001.jpeg``). Whether a
normal study number and a pneumonia person number can be the same child is not
published; they are kept as separate ids. The published train/test/val folders fill
``split``; run ``cxr data check`` to see whether patients cross them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cxrlib.data.adapters._common import AdapterResult, Skips, finish, patient, scan_images

SOURCE = "kermany"
SPLITS = {"train": "train", "test": "test", "val": "val"}
_PNEUMONIA = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-\d+", re.IGNORECASE)


def _split_dirs(root: Path) -> list[Path]:
    """The shallowest set of train/test/val folders that contain NORMAL or PNEUMONIA."""
    candidates = [p.parent for p in root.rglob("*") if p.is_dir() and p.name.upper() in ("NORMAL", "PNEUMONIA")
                  and p.parent.name.lower() in SPLITS and "__MACOSX" not in p.parts]
    if not candidates:
        raise FileNotFoundError(f"{root}: no train|test|val/NORMAL|PNEUMONIA folders found (Kermany layout)")
    depth = min(len(p.parts) for p in candidates)
    shallow = {p for p in candidates if len(p.parts) == depth}
    parent = sorted({p.parent for p in shallow})[0]
    return sorted(p for p in shallow if p.parent == parent)


def parse_name(name: str, folder: str) -> tuple[str, str] | None:
    """(patient id, finding) from a Kermany file name, or None if it does not parse.

    Args:
        name: file name, e.g. ``person12_bacteria_45.jpeg``.
        folder: ``NORMAL`` or ``PNEUMONIA``.
    """
    if folder.upper() == "PNEUMONIA":
        m = _PNEUMONIA.match(name)
        return (m.group(1).lower(), m.group(2).lower()) if m else None
    m = _NORMAL.match(name)
    return (m.group(1).upper(), "NORMAL") if m else None


def build_manifest(root, task=None, official_split: bool = True) -> AdapterResult:
    """Manifest of the Kermany pediatric chest X-ray set.

    Args:
        root: the unzipped dataset (nested copies are tolerated: the shallowest is used).
        task: None (findings only) or a single-label task.
        official_split: fill ``split`` with the published train/test/val folder.
    """
    root = Path(root)
    skips, rows = Skips(), []
    notes = ["kermany: patient ids derived from file names (personN for pneumonia, IM-NNNN study "
             "prefix for normal); not published as patient ids"]
    used = [Path(os.path.relpath(d, root)).as_posix() for d in _split_dirs(root)]
    for rel in scan_images(root, root, skips):
        split_rel = next((d for d in used if rel.startswith(d + "/") or d == "."), None)
        rest = rel[len(split_rel) + 1:].split("/") if split_rel not in (None, ".") else rel.split("/")
        if split_rel is None:
            skips.add("outside the train|test|val folders used (e.g. a second, nested copy)", "", rel)
            continue
        if len(rest) < 2:
            skips.add("file at the top of a split folder, not in NORMAL or PNEUMONIA", "", rel)
            continue
        cls, name = rest[0], rest[-1]
        if cls.upper() not in ("NORMAL", "PNEUMONIA"):
            skips.add(f"folder {cls} is not NORMAL or PNEUMONIA", "", rel)
            continue
        parsed = parse_name(name, cls)
        if parsed is None:
            skips.add(f"file name does not match the {cls} naming pattern", "", rel)
            continue
        pid, finding = parsed
        row = dict(path=rel, patient_id=patient(SOURCE, pid), source=SOURCE, view="",
                   findings=finding, _source_row="")
        if official_split:
            row["split"] = SPLITS[Path(split_rel).name.lower()]
        rows.append(row)
    return finish(rows, skips, "kermany", task, notes)

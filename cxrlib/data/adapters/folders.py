"""Generic folder-per-class image collection (any dataset published as ``root/<class>/*.png``).

Dataset: any; e.g. the Kaggle "COVID-19 chest X-ray" folder dumps, or images a user sorted
by hand. Layout::

    root/<class name>/**/*.png|jpg|jpeg|jfif|webp|bmp|tif   (extensions case-insensitive)

Files are keyed by their path (two ``a.png`` in two subfolders are two images); hidden
files, other extensions and files outside a class folder are skips with their reason.
``findings`` is the folder name. With a task, the label is ``class_map[folder]`` or the
folder name itself when it is already a class of the task; other folders are skipped with a
reason. Without patient ids, ``patient_id`` is the file stem (or the first group of
``patient_regex`` matched against the file name), and a note warns about leakage.
"""

from __future__ import annotations

import re
from pathlib import Path

from cxrlib.data.adapters._common import AdapterResult, Skips, finish, parse_mapping, patient, scan_images
from cxrlib.data.taxonomy import normalize_task, task_classes


def build_manifest(root, task=None, class_map: dict | str | None = None, source: str = "folders",
                   patient_regex: str | None = None) -> AdapterResult:
    """Manifest of a folder-per-class collection.

    Args:
        root: folder whose subfolders are the classes.
        task: None (findings = folder names, label empty) or a single-label task.
        class_map: folder -> task class, as a dict or ``"COVID:covid19,Healthy:normal"``.
        source: manifest ``source`` value.
        patient_regex: regex whose first group is the patient id in a file name.
    """
    root = Path(root)
    task = normalize_task(task) if task else None
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    mapping = parse_mapping(class_map)
    classes = task_classes(task) if task else ()
    pattern = re.compile(patient_regex) if patient_regex else None
    skips, rows = Skips(), []
    notes = [] if pattern else [f"{source}: no patient ids: patient_id = file stem, so images of one "
                                "patient may cross splits (leakage cannot be ruled out)"]
    for rel in scan_images(root, root, skips):
        if "/" not in rel:
            skips.add("file at the top of the collection, not in a class folder", "", rel)
            continue
        cls, name = rel.split("/", 1)[0], rel.rsplit("/", 1)[-1]
        label = mapping.get(cls, cls if cls in classes else "")
        pid = Path(name).stem
        if pattern:
            m = pattern.search(name)
            if not m or not m.group(1):
                skips.add(f"file name does not match patient_regex {patient_regex!r}", "", rel, cls)
                continue
            pid = m.group(1)
        rows.append(dict(path=rel, patient_id=patient(source, pid), source=source, view="",
                         findings=cls, label=label if task else "", _source_row="",
                         _reason=f"folder {cls!r} is not a class of {task} (see class_map)"))
    if task and normalize_task(task) != "nih14":
        bad = {lab for lab in mapping.values() if lab not in classes}
        if bad:
            raise ValueError(f"class_map maps to {sorted(bad)}, not classes of {task}: {list(classes)}")
    return finish(rows, skips, None, task, notes)

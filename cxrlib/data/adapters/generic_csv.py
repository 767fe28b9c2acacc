"""Generic CSV table of images (any dataset that publishes one row per image).

Dataset: any; the columns are named by options, e.g. for a table
``file,subject,diagnosis`` use ``path_column=file patient_column=subject
label_column=diagnosis``. Findings can also be mapped through a ``label_map.csv``
vocabulary (``finding_column=finding vocabulary=covid-chestxray``).
"""

from __future__ import annotations

from pathlib import Path

from cxrlib.data.adapters._common import (
    AdapterResult, Skips, finish, parse_mapping, patient, read_table, require_columns, source_row,
)
from cxrlib.data.taxonomy import normalize_task, task_classes


def build_manifest(root, task=None, csv: str = "metadata.csv", path_column: str = "path",
                   patient_column: str | None = None, label_column: str | None = None,
                   finding_column: str | None = None, vocabulary: str | None = None,
                   view_column: str | None = None, class_map: dict | str | None = None,
                   image_dir: str = "", source: str = "csv", encoding: str = "utf-8") -> AdapterResult:
    """Manifest of a CSV table of images.

    Exactly one of ``label_column`` (values are task classes, or mapped by ``class_map``)
    and ``finding_column`` (findings, mapped by ``vocabulary`` when a task is given) names
    the target.

    Args:
        root: data root; the CSV path and image paths are relative to it.
        task: None (findings only) or a single-label task.
        csv: the table, relative to ``root`` (or absolute).
        path_column: column with the image path (relative to ``root/image_dir``).
        patient_column: patient id column; None uses the file stem (with a leakage note).
        label_column: column whose values are (or map via ``class_map`` to) task classes.
        finding_column: column of source findings (``|``/``,`` separated).
        vocabulary: label_map.csv vocabulary of ``finding_column``.
        view_column: optional view column.
        class_map: value -> task class for ``label_column`` (dict or ``"a:x,b:y"``).
        image_dir: folder of the images relative to ``root``.
        source: manifest ``source`` value.
        encoding: text encoding of the CSV.
    """
    root = Path(root)
    task = normalize_task(task) if task else None
    table_path = Path(csv) if Path(csv).is_absolute() else root / csv
    if (label_column is None) == (finding_column is None):
        raise ValueError("give exactly one of label_column and finding_column")
    if finding_column and task and vocabulary is None:
        raise ValueError("finding_column with a task needs vocabulary= (a label_map.csv vocabulary)")
    df = read_table(table_path, encoding=encoding)
    columns = [c for c in (path_column, patient_column, label_column, finding_column, view_column) if c]
    require_columns(df, columns, table_path)
    mapping = parse_mapping(class_map)
    classes = task_classes(task) if task else ()
    skips, rows = Skips(), []
    notes = [] if patient_column else [f"{source}: no patient column: patient_id = file stem (leakage "
                                       "cannot be ruled out)"]
    for i, rec in enumerate(df.to_dict("records")):
        rel = (Path(image_dir) / rec[path_column].strip()).as_posix()
        value = rec[label_column or finding_column].strip()
        if not rec[path_column].strip() or not (root / rel).is_file():
            skips.add("image file not found", source_row(i), rel, value)
            continue
        pid = rec[patient_column].strip() if patient_column else Path(rel).stem
        if not pid:
            skips.add("patient id not given", source_row(i), rel, value)
            continue
        row = dict(path=rel, patient_id=patient(source, pid), source=source,
                   view=rec[view_column].strip() if view_column else "", findings=value,
                   _source_row=source_row(i))
        if label_column:
            label = mapping.get(value, value)
            row["label"] = label if label in classes else ""
            row["_reason"] = f"{label_column} {value!r} is not a class of {task} (see class_map)"
        rows.append(row)
    return finish(rows, skips, vocabulary if finding_column else None, task, notes)

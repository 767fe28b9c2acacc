"""Generic CSV table of images (any dataset that publishes one row per image).

Dataset: any; the columns are named by options, e.g. for a table
``file,subject,diagnosis`` use ``path_column=file patient_column=subject
label_column=diagnosis``. Findings can also be mapped through a ``label_map.csv``
vocabulary (``finding_column=finding vocabulary=covid-chestxray``).

Collections that publish ids, not file names (e.g. a table ``image_id,patient,finding``
with the images stored as ``png/<image_id>.png``) build the path from a template whose
``{column}`` fields are filled from each row::

    cxr data manifest csv ROOT -o m.csv --opt csv=labels.csv \\
        --opt path_template=png/{image_id}.png --opt patient_column=patient --opt label_column=finding

Image files under ``root/image_dir`` that no row names are skips (``image not listed``).
Rows are checked, first failing reason wins: the path is inside the data root (``../x.png``
and absolute paths are refused, naming the line), the file exists, the patient id is not
empty, the path was not listed on an earlier line. Every skipped row keeps its CSV line.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from cxrlib.data.adapters._common import (
    AdapterResult, Skips, finish, inside, parse_mapping, patient, read_table, require_columns, scan_images,
    source_row,
)
from cxrlib.data.taxonomy import normalize_task, task_classes


def build_manifest(root, task=None, csv: str = "metadata.csv", path_column: str = "path",
                   patient_column: str | None = None, label_column: str | None = None,
                   finding_column: str | None = None, vocabulary: str | None = None,
                   view_column: str | None = None, class_map: dict | str | None = None,
                   image_dir: str = "", source: str = "csv", encoding: str = "utf-8",
                   path_template: str | None = None) -> AdapterResult:
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
        encoding: text encoding of the CSV (``latin-1`` for many spreadsheet exports).
        path_template: build the path from row values instead of ``path_column``, e.g.
            ``png/{image_id}.png`` (``{column}`` fields; relative to ``root/image_dir``).
    """
    root = Path(root)
    task = normalize_task(task) if task else None
    table_path = Path(csv) if Path(csv).is_absolute() else root / csv
    if (label_column is None) == (finding_column is None):
        raise ValueError("give exactly one of label_column and finding_column")
    if finding_column and task and vocabulary is None:
        raise ValueError("finding_column with a task needs vocabulary= (a label_map.csv vocabulary)")
    df = read_table(table_path, encoding=encoding)
    fields = [f for _, f, _, _ in string.Formatter().parse(path_template or "") if f]
    if path_template and not fields:
        raise ValueError(f"path_template {path_template!r} names no {{column}} field")
    columns = [c for c in (None if path_template else path_column, patient_column, label_column, finding_column,
                           view_column, *fields) if c]
    require_columns(df, columns, table_path)
    mapping = parse_mapping(class_map)
    classes = task_classes(task) if task else ()
    skips, rows, first = Skips(), [], {}
    notes = [] if patient_column else [f"{source}: no patient column: patient_id = file stem (leakage "
                                       "cannot be ruled out)"]
    where = "path_template" if path_template else path_column
    records = df.to_dict("records")
    paths = [path_template.format(**{f: rec[f].strip() for f in fields}) if path_template
             else rec[path_column].strip() for rec in records]
    for i, (rec, given) in enumerate(zip(records, paths)):
        line = source_row(i)
        rel = inside(root, f"{image_dir}/{given}" if image_dir and given else given, table_path, line, where)
        value = rec[label_column or finding_column].strip()
        if not given or not (root / rel).is_file():
            skips.add("image file not found", line, rel, value)
            continue
        pid = rec[patient_column].strip() if patient_column else Path(rel).stem
        if not pid:
            skips.add("patient id not given", line, rel, value)
            continue
        if rel in first:
            skips.add(f"path already listed on line {first[rel]}", line, rel, value)
            continue
        first[rel] = line
        row = dict(path=rel, patient_id=patient(source, pid), source=source,
                   view=rec[view_column].strip() if view_column else "", findings=value,
                   _source_row=line)
        if label_column:
            label = mapping.get(value, value)
            row["label"] = label if label in classes else ""
            row["_reason"] = f"{label_column} {value!r} is not a class of {task} (see class_map)"
        rows.append(row)
    listed = set(first) | {r for r in skips.frame()["file"]}
    table_rel = os.path.relpath(table_path, root).replace(os.sep, "/")
    scanned = Skips()
    for rel in scan_images(root / image_dir if image_dir else root, root, scanned):
        if rel not in listed:
            skips.add(f"image not listed in {Path(csv).name}", "", rel)
    skips.rows += [r for r in scanned.rows if r["file"] != table_rel]  # the table itself is not a skip
    return finish(rows, skips, vocabulary if finding_column else None, task, notes)

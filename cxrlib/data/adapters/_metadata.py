"""Rows of the COVID-19 collections that share the Cohen metadata schema.

The Cohen collection, the Figure 1 initiative and the Actualmed collection publish one
``metadata.csv`` row per image with ``patientid``, ``finding``, ``view`` (and ``modality``,
``sex``, ``age``); only the column naming the image file differs. This module turns such
rows into manifest rows, skipping (with a reason) non-X-ray, non-frontal, dropped-finding
and missing-file rows.
"""

from __future__ import annotations

from typing import Callable, Iterable

import pandas as pd

from cxrlib.data.adapters._common import Skips, patient, source_row
from cxrlib.data.labels import UnmappedFinding, lookup, split_finding_text

#: frontal projections kept by default (compared case-insensitively)
FRONTAL_VIEWS = ("PA", "AP", "AP Supine", "AP Erect")


def metadata_rows(
    df: pd.DataFrame,
    source: str,
    vocabulary: str,
    image_path: Callable[[dict, int], str | None],
    skips: Skips,
    views: Iterable[str] | None = FRONTAL_VIEWS,
    allow_blank_view: bool = False,
    file_column: str = "filename",
) -> list[dict]:
    """Manifest rows from a Cohen-schema metadata table.

    Checks, in this order (the first failing one is the skip reason): modality is X-ray
    (when the column exists), view is frontal, finding is not empty and not dropped by
    ``label_map.csv`` (``todo``), the image file exists, the image was not listed on an
    earlier row (the Cohen table lists a few images twice, under two patient ids), the
    patient id is not empty.

    Args:
        df: the metadata table (strings).
        source: manifest ``source`` value (and patient-id prefix).
        vocabulary: label_map.csv vocabulary of the ``finding`` column.
        image_path: (record, CSV line) -> image path relative to the root, or None if not on
            disk (raises ValueError for a path that leaves the root).
        skips: collects the skipped rows.
        views: allowed views; None keeps every view.
        allow_blank_view: keep rows whose view is empty.
        file_column: column naming the image in skip reports.
    """
    if isinstance(views, str):  # command-line form "PA,AP"
        views = [v for v in views.split(",") if v.strip()]
    allowed = None if views is None else {v.strip().casefold() for v in views}
    rows, seen = [], {}
    for i, rec in enumerate(df.to_dict("records")):
        finding = rec.get("finding", "").strip()
        findings = "|".join(split_finding_text(finding))
        modality = rec.get("modality", "X-ray").strip()
        view = rec.get("view", "").strip()
        line = source_row(i)
        name = rec.get(file_column, "").strip()
        if modality.casefold() != "x-ray":
            skips.add(f"modality {modality or 'blank'} is not X-ray", line, name, findings)
            continue
        if not view and not allow_blank_view:
            skips.add("view not given", line, name, findings)
            continue
        if view and allowed is not None and view.casefold() not in allowed:
            skips.add(f"view {view} is not frontal", line, name, findings)
            continue
        if not findings:
            skips.add("finding not given", line, name, findings)
            continue
        dropped = _drop_reason(vocabulary, findings)
        if dropped:
            skips.add(dropped, line, name, findings)
            continue
        path = image_path(rec, line)
        if path is None:
            skips.add("image file not found", line, name, findings)
            continue
        pid = patient(source, rec.get("patientid", ""))
        if not pid:
            skips.add("patient id not given", line, path, findings)
            continue
        if path in seen:  # upstream lists some images twice, under two patient ids
            skips.add("image already listed on an earlier row", line, name, findings)
            continue
        seen[path] = line
        rows.append(dict(path=path, patient_id=pid, source=source, view=view,
                         findings=findings, age=rec.get("age", "").strip(), sex=rec.get("sex", "").strip(),
                         _source_row=line))
    return rows


def _drop_reason(vocabulary: str, findings: str) -> str:
    """The label_map.csv drop reason of any of the findings ('' if none)."""
    for part in split_finding_text(findings):
        try:
            reason = lookup(vocabulary, part)["drop_reason"]
        except UnmappedFinding:
            continue  # reported when a task is mapped; kept with task=None
        if reason:
            return reason
    return ""

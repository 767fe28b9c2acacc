"""Map source labels (NIH findings, Cohen findings, class folders, ...) to task classes.

The mapping is data: ``label_map.csv`` beside this file has one row per (vocabulary,
finding) with the class it becomes in each single-label task (``-`` = not in that task)
and, for findings that are dropped from every task (Cohen ``todo``), the reason.

A manifest row may carry several findings (NIH ``Effusion|Pneumonia``, Cohen
``COVID-19, ARDS``). They are combined by one rule, the same for every source:

1. every finding must be in the table (otherwise the row is *unmapped*: skipped with the
   reason ``unmapped finding X``, never silently dropped);
2. a finding with a ``drop_reason`` drops the row from every task;
3. the row gets the class of highest precedence among its findings, in the order
   ``covid19 > viral_pneumonia > pneumonia > other_disease > normal`` (so NIH
   ``Effusion|Pneumonia`` is pneumonia and Cohen ``COVID-19, ARDS`` is covid19);
   findings that are not in the task (``-``) are ignored, except that a row is only
   ``normal`` when *all* its findings are normal.

Hierarchical Cohen findings (``Pneumonia/Viral/COVID-19``) are looked up as written; a
path that is not in the table falls back to its nearest listed parent of at least two levels
(``Pneumonia/Viral/Adenovirus`` -> ``Pneumonia/Viral``), whose etiology the table defines;
``Pneumonia/Whatever`` is unmapped rather than guessed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cxrlib.data.taxonomy import normalize_task, task_classes

_LABEL_MAP_CSV = Path(__file__).with_name("label_map.csv")

#: class precedence when a row has several findings (first wins)
PRECEDENCE: tuple[str, ...] = ("covid19", "viral_pneumonia", "pneumonia", "other_disease", "normal")
NOT_IN_TASK = "-"
#: vocabulary aliases (adapter source name -> table vocabulary)
VOCABULARY_ALIASES = {"cohen": "covid-chestxray", "nih14": "nih", "chestx-ray14": "nih"}


class UnmappedFinding(ValueError):
    """A finding that ``label_map.csv`` does not list for its vocabulary."""


@dataclass(frozen=True)
class LabelDecision:
    """Outcome of mapping one row's findings to a task.

    ``label`` is the class, or '' when the row is not used; ``reason`` then says why.
    """

    label: str
    reason: str = ""


def _key(text: str) -> str:
    return " ".join(str(text).split()).casefold()


@lru_cache(maxsize=None)
def load_label_map() -> dict[str, dict[str, dict[str, str]]]:
    """The table as {vocabulary: {normalized finding: row dict}}.

    Raises:
        ValueError: a table cell names a class that is not in the task (typo guard).
    """
    table: dict[str, dict[str, dict[str, str]]] = {}
    with open(_LABEL_MAP_CSV, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            for task in ("paper_a", "paper_b", "paper_b_viral"):
                value = row[task]
                if value != NOT_IN_TASK and value not in task_classes(task):
                    raise ValueError(f"{_LABEL_MAP_CSV}: line {line}: {value!r} is not a class of {task}")
            table.setdefault(row["vocabulary"], {})[_key(row["finding"])] = row
    return table


def vocabularies() -> tuple[str, ...]:
    """Vocabularies listed in ``label_map.csv``."""
    return tuple(load_label_map())


def _vocabulary(vocabulary: str) -> dict[str, dict[str, str]]:
    vocab = VOCABULARY_ALIASES.get(vocabulary.lower(), vocabulary.lower())
    table = load_label_map()
    if vocab not in table:
        raise ValueError(f"unknown vocabulary {vocabulary!r}; known: {', '.join(table)}")
    return table[vocab]


def split_finding_text(finding: str) -> list[str]:
    """Split a findings cell into single findings (``|`` and ``,`` separate findings).

    Args:
        finding: e.g. ``Edema|Pneumonia`` or ``COVID-19, ARDS``.
    """
    parts = str(finding).replace(",", "|").split("|")
    return [p.strip() for p in parts if p.strip()]


def lookup(vocabulary: str, finding: str) -> dict[str, str]:
    """The ``label_map.csv`` row of one single finding (hierarchical paths fall back to parents).

    Args:
        vocabulary: e.g. ``nih``, ``covid-chestxray``, ``kermany``.
        finding: one finding, e.g. ``Pneumonia/Viral/SARS``.

    Raises:
        UnmappedFinding: neither the finding nor any parent path is listed.
    """
    table = _vocabulary(vocabulary)
    parts = [p.strip() for p in finding.split("/")]
    for n in range(len(parts), 0, -1):
        row = table.get(_key("/".join(parts[:n])))
        if row is not None and (n == len(parts) or n > 1):
            return row
    raise UnmappedFinding(f"unmapped finding {finding!r} (vocabulary {vocabulary})")


def resolve_label(vocabulary: str, findings: str, task: str) -> LabelDecision:
    """Map a findings cell to a task class, with the reason when the row is not used.

    Args:
        vocabulary: source vocabulary (see :func:`vocabularies`).
        findings: findings cell (``|`` or ``,`` separated).
        task: ``paper_a``, ``paper_b`` or ``paper_b_viral`` (``paper-a`` accepted).
    """
    task = normalize_task(task)
    parts = split_finding_text(findings)
    if not parts:
        return LabelDecision("", "empty finding")
    rows = []
    for part in parts:
        try:
            rows.append(lookup(vocabulary, part))
        except UnmappedFinding:
            return LabelDecision("", f"unmapped finding {part}")
    if task not in ("paper_a", "paper_b", "paper_b_viral"):
        raise ValueError(f"task {task!r} is multi-label; label_map.csv maps single-label tasks only")
    for row in rows:
        if row["drop_reason"]:
            return LabelDecision("", row["drop_reason"])
    classes = [row[task] for row in rows]
    in_task = [c for c in classes if c != NOT_IN_TASK]
    if not in_task:
        return LabelDecision("", f"not in {task}")
    best = min(in_task, key=PRECEDENCE.index)
    if best == "normal" and len(in_task) < len(classes):
        return LabelDecision("", f"not in {task} (normal with an excluded finding)")
    return LabelDecision(best)


def map_label(vocabulary: str, finding: str, task: str) -> str:
    """Task class of a findings cell, or '' when the row is not in the task (or dropped).

    Args:
        vocabulary: source vocabulary, e.g. ``nih`` or ``covid-chestxray``.
        finding: findings cell, e.g. ``Effusion|Pneumonia`` or ``Pneumonia/Viral/COVID-19``.
        task: ``paper_a``, ``paper_b`` or ``paper_b_viral``.

    Raises:
        UnmappedFinding: a finding is not in ``label_map.csv`` (nothing is silently dropped).
    """
    decision = resolve_label(vocabulary, finding, task)
    if decision.reason.startswith("unmapped finding"):
        raise UnmappedFinding(f"{decision.reason} (vocabulary {vocabulary})")
    return decision.label

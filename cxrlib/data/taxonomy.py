"""Target taxonomies (class lists) of the tasks cxrlib trains.

The class lists are data: they are read from ``tasks.csv`` beside this file, in the order
that defines the model's output neurons. How source labels (NIH findings, Cohen findings,
...) map onto these classes is the table ``label_map.csv`` (see ``cxrlib.data.labels``).
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

_TASKS_CSV = Path(__file__).with_name("tasks.csv")


@lru_cache(maxsize=None)
def _load_tasks() -> dict[str, tuple[str, ...]]:
    tasks: dict[str, list[str]] = {}
    with open(_TASKS_CSV, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            tasks.setdefault(row["task"], []).append(row["class"])
    return {k: tuple(v) for k, v in tasks.items()}


TASKS: dict[str, tuple[str, ...]] = _load_tasks()
NIH_FINDINGS: tuple[str, ...] = TASKS["nih14"]
NO_FINDING = "No Finding"  # NIH ChestX-ray14's label of an image without any of the 14 findings


def normalize_task(task: str) -> str:
    """Return the canonical task name: ``paper-a`` and ``paper_a`` are the same task.

    Args:
        task: a task name such as ``paper_a``, ``paper-b``, ``nih14`` or ``source``
            (``source`` is an alias of ``nih14``, the multi-label source domain).
    """
    key = task.strip().lower().replace("-", "_")
    if key == "source":
        key = "nih14"
    if key not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    return key


def task_classes(task: str) -> tuple[str, ...]:
    """Class names of a task, in output-neuron order.

    Args:
        task: task name (see :func:`normalize_task`).
    """
    return TASKS[normalize_task(task)]


def is_multilabel(task: str) -> bool:
    """True for the multi-label (sigmoid) NIH source task, False for the softmax target tasks.

    Args:
        task: task name (see :func:`normalize_task`).
    """
    return normalize_task(task) == "nih14"

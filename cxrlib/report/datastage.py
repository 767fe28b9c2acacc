"""The data stage of a run (notebook ``01_data``): the YAML ``data:`` block -> the one preparation path.

This module only translates the experiment config into a :class:`cxrlib.data.prepare.Plan`
and writes what :func:`cxrlib.data.prepare.prepare` returns; every step (adapters,
duplicates, patient groups, split, leakage check, set-aside rows) lives there, shared with
``cxr data build-manifests``.

One data root per run, so every later stage reads ``path`` relative to the same folder:

- phantoms: images are generated into ``<run>/data/source`` and ``<run>/data/target``
  (:func:`cxrlib.data.phantoms.generate_phantoms`); the root is ``<run>/data``.
- real data: each ``adapters`` entry names a collection (``collection: nih``), found under
  ``--data ROOT`` by its published folder names, or an explicit ``path:``; ``cxr run
  --dataset nih=/mnt/nih`` (``data.datasets``) overrides both.

Written to the stage folder: ``target.csv``, ``source.csv``, ``duplicates.csv``,
``set_aside.csv`` (every row left out, with part and reason) and ``data.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from cxrlib import io
from cxrlib.data import manifest as mf
from cxrlib.data.selection import cap_per_class, sample_per_class  # noqa: F401  (notebook imports)

DATA_INFO = "data.json"


def phantom_part(cfg: Mapping[str, Any], part: str, data_dir: Path) -> pd.DataFrame:
    """Generate the phantom images of ``part`` (``source``/``target``); return its manifest."""
    from cxrlib.data.phantoms import generate_phantoms

    opts = dict(cfg["data"][part])
    task = opts.pop("task", "source" if part == "source" else cfg["task"])
    n = int(opts.pop("n"))
    for key in ("max_per_class", "adapters"):
        opts.pop(key, None)
    path = generate_phantoms(data_dir / part, task=task, n=n,
                             image_size=int(cfg["data"].get("image_size", 64)), **opts)
    from cxrlib.data.prepare import prefix_manifest

    return prefix_manifest(mf.read_manifest(path), part)


def needs_source(cfg: Mapping[str, Any]) -> bool:
    """True when a strategy pretrains on the source domain."""
    from cxrlib.strategies import uses_source

    return any(uses_source(n, o) for n, o in cfg["strategies"].items())


def plan_from_config(cfg: Mapping[str, Any], with_source: bool | None = None):
    """The :class:`~cxrlib.data.prepare.Plan` of an experiment config's ``data:`` and ``split:``."""
    from cxrlib.data.adapters.collections import parse_datasets
    from cxrlib.data.prepare import Entry, Plan

    data = cfg["data"]
    with_source = needs_source(cfg) if with_source is None else with_source
    tblock, sblock = data.get("target") or {}, data.get("source") or {}
    entries = {}
    if data["kind"] == "real":
        for part, block in (("target", tblock), ("source", sblock)):
            items = block.get("adapters") or []
            if part == "source" and not with_source:
                items = []
            elif not items:
                raise ValueError(f"{cfg['name']}: data.{part}.adapters is empty")
            entries[part] = [Entry.from_mapping(i, f"{cfg['name']}: data.{part}.adapters") for i in items]
    s = cfg["split"]
    kfold = s.get("kind") == "kfold"
    dcfg = data.get("dedup", True)
    dcfg = dcfg if isinstance(dcfg, Mapping) else {}
    extra = {k: dcfg[k] for k in ("max_distance", "min_correlation") if k in dcfg}
    # --dataset KEY=PATH: the data entries' folders go to the preparation; a key only the
    # ``external:`` block names is the external loader's (07_external), not an unknown key
    datasets = parse_datasets(data.get("datasets"))
    named = {e.collection for es in entries.values() for e in es}
    external = {str(c.get("collection") or c.get("adapter") or "")
                for c in ((cfg.get("external") or {}).get("collections") or []) if isinstance(c, Mapping)}
    unknown = sorted(set(datasets) - named - external)
    if unknown:
        raise ValueError(f"--dataset {', '.join(unknown)}: no data or external entry of {cfg['name']} names this "
                         f"collection; entries name {', '.join(sorted(named | external - {''}))}")
    return Plan(task=cfg["task"], target=entries.get("target", []), source=entries.get("source", []),
                folds=int(s.get("k", 5)) if kfold else 0,
                test_size=0.0 if kfold else float(s.get("test_size", 0.2)),
                val_size=0.0 if kfold else float(s.get("val_size", 0.2)), seed=int(s.get("seed", 0)),
                max_per_class=tblock.get("max_per_class"), cap_seed=int(tblock.get("seed", 0)),
                dedup=bool(data.get("dedup", True)), prefer=tuple(dcfg.get("prefer", ())),
                datasets={k: v for k, v in datasets.items() if k in named}, name=str(cfg["name"]), **extra)


def prepare_data(cfg: Mapping[str, Any], run_dir: str | os.PathLike, stage_dir: str | os.PathLike,
                 data_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build the run's source and target manifests (see the module docstring).

    Args:
        cfg: resolved experiment config.
        run_dir: the run folder (phantoms are generated under ``<run>/data``).
        stage_dir: the data stage's folder (manifests and reports are written there).
        data_root: root of the public datasets (``data.kind: real``).

    Returns:
        The ``data.json`` record: root, manifest paths, counts, set-aside counts by reason.
    """
    from cxrlib.data.prepare import prepare

    stage_dir = Path(stage_dir)
    if cfg["data"]["kind"] != "phantoms" and not data_root:
        raise ValueError("data.kind is 'real': give the datasets' root (--data ROOT)")
    with_source = needs_source(cfg)
    plan = plan_from_config(cfg, with_source)
    if cfg["data"]["kind"] == "phantoms":
        root = Path(run_dir) / "data"
        target = phantom_part(cfg, "target", root)
        source = phantom_part(cfg, "source", root) if with_source else None
        prep = prepare(plan, root, target=target, source=source)
    else:
        prep = prepare(plan, data_root, progress=True)
    write_stage(prep, stage_dir)
    aside = prep.set_aside
    info = {
        "root": str(prep.root),
        "target": str(stage_dir / "target.csv"),
        "source": str(stage_dir / "source.csv") if prep.source is not None else "",
        "n_target": int(len(prep.target)), "n_source": int(len(prep.source)) if prep.source is not None else 0,
        "target_patients": int(prep.target["patient_group"].nunique()),
        "duplicate_pairs": int(len(prep.pairs)),
        "collections": prep.folders,
        "set_aside": aside["reason"].value_counts().to_dict() if len(aside) else {},
        "notes": prep.notes,
    }
    io.write_json(stage_dir / DATA_INFO, info)
    return info


def write_stage(prep, stage_dir: Path) -> None:
    """Write a :class:`~cxrlib.data.prepare.Prepared` as the stage's files (atomically)."""
    mf.write_manifest(prep.target, stage_dir / "target.csv")
    if prep.source is not None:
        mf.write_manifest(prep.source, stage_dir / "source.csv")
    io.write_csv(stage_dir / "duplicates.csv", prep.pairs, index=False)
    io.write_csv(stage_dir / "set_aside.csv", prep.set_aside, index=False)


def load_data_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``data.json`` written by the run's data stage.

    Raises:
        FileNotFoundError: the data stage has not run.
    """
    path = Path(run_dir) / "stages" / "01_data" / DATA_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the data stage (01_data) has not run in this run folder")
    return io.read_json(path)

"""The data stage of a run (notebook ``01_data``): manifests, duplicates, splits, leakage.

One data root per run, so every later stage reads ``path`` relative to the same folder:

- phantoms: images are generated into ``<run>/data/source`` and ``<run>/data/target``
  (:func:`cxrlib.data.phantoms.generate_phantoms`); the root is ``<run>/data``.
- real data: each adapter entry names a dataset folder under ``--data ROOT``; its manifest
  paths are prefixed with that folder; the root is ``--data ROOT``.

Then, in this order: target rows without a label for the task are counted and set aside;
perceptual-hash duplicates are found across source and target together; duplicates inside
the target are dropped (one kept per group) and source images duplicating a target image
are dropped from the source (the source model must not pretrain on target test images);
the target is split (patient-grouped k-fold or hold-out) and checked for leakage.
Everything set aside is written with its reason; ``data.json`` records the result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from cxrlib.data import manifest as mf

DATA_INFO = "data.json"


def _prefix(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Prefix ``path`` (and ``mask_path``) with a sub-folder of the run's data root."""
    df = df.copy()
    for col in ("path", "mask_path"):
        if col in df.columns:
            df[col] = [f"{prefix}/{p}" if p else "" for p in df[col]]
    return df


def phantom_part(cfg: Mapping[str, Any], part: str, data_dir: Path) -> pd.DataFrame:
    """Generate the phantom images of ``part`` (``source``/``target``); return its manifest.

    Args:
        cfg: resolved experiment config (``data.<part>`` gives task, n, seed, ...).
        part: ``source`` or ``target``.
        data_dir: the run's data root.
    """
    from cxrlib.data.phantoms import generate_phantoms

    opts = dict(cfg["data"][part])
    task = opts.pop("task", "source" if part == "source" else cfg["task"])
    n = int(opts.pop("n"))
    path = generate_phantoms(data_dir / part, task=task, n=n,
                             image_size=int(cfg["data"].get("image_size", 64)), **opts)
    return _prefix(mf.read_manifest(path), part)


def real_part(cfg: Mapping[str, Any], part: str, data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the adapters of ``data.<part>.adapters``; return (manifest, skipped rows).

    Each adapter entry: ``{adapter: nih, root: <folder under data_root>, task: ..., options: {}}``.
    """
    from cxrlib.data.adapters import build_manifest

    block = cfg["data"].get(part) or {}
    entries = block.get("adapters") or []
    if not entries:
        raise ValueError(f"{cfg['name']}: data.{part}.adapters is empty")
    frames, skipped = [], []
    for entry in entries:
        folder = data_root / entry["root"]
        if not folder.is_dir() and entry.get("optional"):
            skipped.append(pd.DataFrame([{"source_row": "", "file": str(folder), "findings": "",
                                          "reason": "optional dataset folder not found",
                                          "adapter": entry["adapter"], "part": part}]))
            continue
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data.{part}: dataset folder {folder} not found (adapter {entry['adapter']!r}); "
                f"download it in its published layout under --data {data_root}")
        task = entry.get("task", "nih14" if part == "source" else cfg["task"])
        res = build_manifest(entry["adapter"], folder, task=task, **(entry.get("options") or {}))
        frames.append(_prefix(res.manifest, entry["root"]))
        if not res.skipped.empty:
            skipped.append(res.skipped.assign(adapter=entry["adapter"], part=part))
    if not frames:
        raise FileNotFoundError(f"data.{part}: none of the dataset folders was found under {data_root}")
    df = pd.concat(frames, ignore_index=True).fillna("")
    return df, (pd.concat(skipped, ignore_index=True) if skipped else pd.DataFrame())


def _dedup(source: pd.DataFrame | None, target: pd.DataFrame, root: Path, dcfg: Mapping[str, Any]
           ) -> tuple[pd.DataFrame | None, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(source kept, target kept, duplicate pairs, removed rows with reason)."""
    from cxrlib.data.dedup import add_hashes, drop_duplicates, find_duplicates

    target = add_hashes(target, root)
    parts = [target.assign(_part="target")]
    if source is not None:
        source = add_hashes(source, root)
        parts.append(source.assign(_part="source"))
    both = pd.concat(parts, ignore_index=True).fillna("")
    pairs = find_duplicates(both, root=root, max_distance=int(dcfg.get("max_distance", 6)),
                            cross_source_only=bool(dcfg.get("cross_source_only", False)))
    part_of = dict(zip(both["path"], both["_part"]))
    in_target = np.array([part_of[a] == "target" and part_of[b] == "target"
                          for a, b in zip(pairs["path_a"], pairs["path_b"])], dtype=bool)
    tpairs = pairs.loc[in_target]
    target_kept, removed_t = drop_duplicates(target, tpairs, prefer=tuple(dcfg.get("prefer", ())))
    removed = [removed_t.assign(part="target", reason="duplicate of another target image")]
    if source is not None:
        tpaths = set(target["path"])
        dup_src = {}
        for a, b in zip(pairs["path_a"], pairs["path_b"]):
            if a in tpaths and part_of[b] == "source":
                dup_src[b] = a
            elif b in tpaths and part_of[a] == "source":
                dup_src[a] = b
        mask = source["path"].isin(dup_src)
        removed.append(source[mask].assign(part="source", duplicate_of=source.loc[mask, "path"].map(dup_src),
                                           reason="source image duplicates a target image"))
        source = source[~mask].reset_index(drop=True)
    return source, target_kept, pairs, pd.concat(removed, ignore_index=True)


def split_target(target: pd.DataFrame, cfg: Mapping[str, Any], pairs: pd.DataFrame | None) -> pd.DataFrame:
    """Patient-grouped, class-stratified k-fold or hold-out split, then the leakage check.

    Raises:
        cxrlib.data.splits.LeakageError: a patient or a duplicate image crosses splits.
    """
    from cxrlib.data import splits

    s = cfg["split"]
    seed = int(s.get("seed", 0))
    if s["kind"] == "kfold":
        out = splits.kfold_split(target, k=int(s["k"]), seed=seed)
    else:
        out = splits.holdout_split(target, test_size=float(s.get("test_size", 0.2)),
                                   val_size=float(s.get("val_size", 0.2)), seed=seed)
    splits.assert_no_leakage(out, pairs)
    return out


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
    stage_dir = Path(stage_dir)
    need_source = any(
        str((o or {}).get("strategy", n)) in ("domain_extension", "twice")
        for n, o in cfg["strategies"].items())
    skipped = pd.DataFrame()
    if cfg["data"]["kind"] == "phantoms":
        root = Path(run_dir) / "data"
        target = phantom_part(cfg, "target", root)
        source = phantom_part(cfg, "source", root) if need_source else None
    else:
        if not data_root:
            raise ValueError("data.kind is 'real': give the datasets' root (--data ROOT)")
        root = Path(data_root)
        target, sk_t = real_part(cfg, "target", root)
        source, sk_s = real_part(cfg, "source", root) if need_source else (None, pd.DataFrame())
        skipped = pd.concat([sk_t, sk_s], ignore_index=True)
    set_aside = []
    unlabeled = target["label"] == ""
    if unlabeled.any():
        set_aside.append(target[unlabeled].assign(part="target", reason=f"no {cfg['task']} label"))
        target = target[~unlabeled].reset_index(drop=True)
    from cxrlib.data.taxonomy import task_classes

    # schema, labels and files, before any long work (names the CSV line and column)
    mf.check_manifest(target, root=root, classes=task_classes(cfg["task"]), require_label=True)

    cap = (cfg["data"].get("target") or {}).get("max_per_class")
    if cap:
        target, over = cap_per_class(target, int(cap), int((cfg["data"].get("target") or {}).get("seed", 0)))
        set_aside.append(over.assign(part="target", reason=f"above data.target.max_per_class={cap}"))
    old_split = [c for c in ("split", "fold") if c in target.columns and (target[c] != "").any()]
    if old_split:  # e.g. NIH's official lists: this experiment makes its own patient-grouped split
        target = target.drop(columns=old_split)
    if source is not None:
        same = source["path"].isin(set(target["path"]))
        set_aside.append(source[same].assign(part="source", reason="same image file is a target image"))
        source = source[~same].reset_index(drop=True)

    pairs = pd.DataFrame(columns=["path_a", "path_b", "source_a", "source_b", "kind", "distance"])
    dcfg = cfg["data"].get("dedup", True)
    if dcfg:
        source, target, pairs, removed = _dedup(source, target, root, dcfg if isinstance(dcfg, Mapping) else {})
        set_aside.append(removed)
    target = split_target(target, cfg, pairs)

    mf.write_manifest(target, stage_dir / "target.csv")
    if source is not None:
        mf.write_manifest(source, stage_dir / "source.csv")
    pairs.to_csv(stage_dir / "duplicates.csv", index=False)
    aside = pd.concat([d for d in set_aside if len(d)], ignore_index=True) if any(len(d) for d in set_aside) \
        else pd.DataFrame(columns=["path", "part", "reason"])
    aside.drop(columns=[c for c in ("_part",) if c in aside.columns]).to_csv(stage_dir / "set_aside.csv", index=False)
    if len(skipped):
        skipped.to_csv(stage_dir / "adapter_skipped.csv", index=False)
    info = {
        "root": str(root),
        "target": str(stage_dir / "target.csv"),
        "source": str(stage_dir / "source.csv") if source is not None else "",
        "n_target": int(len(target)), "n_source": int(len(source)) if source is not None else 0,
        "target_patients": int(target[["source", "patient_id"]].drop_duplicates().shape[0]),
        "duplicate_pairs": int(len(pairs)),
        "set_aside": aside["reason"].value_counts().to_dict() if len(aside) else {},
        "adapter_skipped": skipped["reason"].value_counts().to_dict() if len(skipped) else {},
    }
    tmp = stage_dir / (DATA_INFO + ".tmp")
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    os.replace(tmp, stage_dir / DATA_INFO)
    return info


def load_data_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``data.json`` written by the run's data stage.

    Raises:
        FileNotFoundError: the data stage has not run.
    """
    path = Path(run_dir) / "stages" / "01_data" / DATA_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the data stage (01_data) has not run in this run folder")
    return json.loads(path.read_text(encoding="utf-8"))


def sample_per_class(df: pd.DataFrame, classes, per_class: int = 4, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_class`` random rows of each class, in class order (for image grids).

    Args:
        df: manifest with a ``label`` column.
        classes: class order.
        per_class: rows per class.
        seed: sampling seed.
    """
    parts = [df[df["label"] == c].sample(n=min(per_class, int((df["label"] == c).sum())), random_state=seed)
             for c in classes]
    return pd.concat(parts).reset_index(drop=True) if parts else df.head(0)


def cap_per_class(df: pd.DataFrame, cap: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep at most ``cap`` random rows per class (seeded); return (kept, set aside).

    Args:
        df: manifest with ``label``.
        cap: rows kept per class.
        seed: sampling seed.
    """
    keep = df.groupby("label", group_keys=False).apply(
        lambda g: g.sample(n=min(cap, len(g)), random_state=seed), include_groups=False).index
    kept = df.loc[sorted(keep)]
    return kept.reset_index(drop=True), df.drop(index=keep).reset_index(drop=True)

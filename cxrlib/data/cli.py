"""``cxr data ...``: manifests, checks, splits, deduplication, phantoms, experiment manifests.

Exit codes: 0 success; 1 the data has problems (``check`` found errors, leakage after a
split); 2 bad input (missing file, bad option, unreadable manifest). Bad data never ends in
a traceback: every expected error is printed as one ``error: ...`` message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cxrlib.data.manifest import ManifestError

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2


class CLIError(Exception):
    """An expected, user-facing error (printed without a traceback)."""


def _handled(func):
    """Run a command; turn expected errors into ``error: ...`` + exit code 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (CLIError, ManifestError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                PermissionError, ValueError, TypeError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    run.__doc__ = func.__doc__
    return run


def _parse_opts(items: list[str] | None) -> dict:
    """``key=value`` adapter options; ``true``/``false`` become booleans."""
    from cxrlib._text import parse_key_values

    try:
        pairs = parse_key_values(items, "--opt", "encoding=latin-1", form="key=value")
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return {key.replace("-", "_"): {"true": True, "false": False}.get(value.strip().lower(), value)
            for key, value in pairs.items()}


def _output(path: str | None, what: str = "-o") -> None:
    """Refuse an output that is a folder before any long work."""
    if path and Path(path).is_dir():
        raise CLIError(f"{what} {path}: is a folder; give a file name to write")


def _read(path: str) -> pd.DataFrame:
    from cxrlib.data.manifest import read_manifest

    return read_manifest(path)


def _print_counts(df: pd.DataFrame, title: str = "") -> None:
    from cxrlib.data.splits import group_keys

    if title:
        print(title)
    col = "label" if "label" in df.columns and (df["label"] != "").any() else "findings"
    values = df[col] if col == "label" else df[col].str.split("|").explode()
    print(f"  images: {len(df)}   patients: {group_keys(df).nunique() if len(df) else 0}")
    for name, n in values.value_counts().items():
        print(f"  {col} {name}: {n}")


# --------------------------------------------------------------------------- commands
@_handled
def cmd_manifest(args: argparse.Namespace) -> int:
    """Build a manifest from one dataset in its published layout."""
    from cxrlib.data.adapters import build_manifest
    from cxrlib.data.manifest import write_manifest

    root = Path(args.root)
    if not root.is_dir():
        raise CLIError(f"dataset folder not found: {root}")
    _output(args.output)
    _output(args.skipped, "--skipped")
    try:
        res = build_manifest(args.source, root, task=args.task, **_parse_opts(args.opt))
    except TypeError as exc:  # unknown adapter option
        raise CLIError(f"bad option for {args.source}: {exc}") from exc
    write_manifest(res.manifest, args.output)
    _print_counts(res.manifest, f"{args.source}: wrote {args.output}")
    counts = res.skip_counts()
    print(f"  skipped rows: {int(counts.sum()) if len(counts) else 0}")
    for reason, n in counts.items():
        print(f"    {n:6d}  {reason}")
    for note in res.notes:
        print(f"  note: {note}")
    if args.skipped:
        from cxrlib.io import write_csv

        write_csv(args.skipped, res.skipped, index=False)
        print(f"  skipped rows written to {args.skipped}")
    return EXIT_OK


@_handled
def cmd_check(args: argparse.Namespace) -> int:
    """Validate a manifest: schema, files, images, duplicates, leakage."""
    from cxrlib.data.manifest import validate_manifest
    from cxrlib.data.splits import check_leakage
    from cxrlib.data.taxonomy import is_multilabel, task_classes

    df = _read(args.manifest)
    root = Path(args.root)
    if not root.is_dir():
        raise CLIError(f"data root not found: {root}")
    classes = task_classes(args.task) if args.task else None
    single = bool(args.task) and not is_multilabel(args.task)
    problems = validate_manifest(df, root=root, classes=classes if single else None, require_label=single,
                                 check_images=args.images, name=args.manifest)
    if args.task and is_multilabel(args.task):
        problems += _check_findings(df, task_classes(args.task))
    pairs = _duplicates_for_check(df, root, args, problems)
    problems += check_leakage(df, pairs)
    if "patient_group" in df.columns:  # patients merged by shared images (cxr data build-manifests)
        problems += check_leakage(df, group_col="patient_group")
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    for p in problems[: args.limit]:
        print(f"{args.manifest}: {p}")
    if len(problems) > args.limit:
        print(f"... and {len(problems) - args.limit} more (use --limit)")
    _print_counts(df, f"summary of {args.manifest}:")
    for col in ("split", "fold"):
        if col in df.columns:
            print(f"  {col}: " + ", ".join(f"{k or '(empty)'} {v}" for k, v in df[col].value_counts().sort_index().items()))
    if pairs is not None:
        print(f"  duplicate pairs: {len(pairs)} ({(pairs['kind'] == 'exact').sum()} exact)")
    print(f"  {len(errors)} error(s), {len(warnings)} warning(s)")
    return EXIT_PROBLEMS if errors else EXIT_OK


def _check_findings(df, classes) -> list:
    """Multi-label task: every finding must be one of ``classes`` or ``No Finding``."""
    from cxrlib.data.manifest import Problem, line_of, split_findings

    allowed = set(classes) | {"No Finding"}
    problems = []
    for i, cell in df["findings"].items():
        unknown = [f for f in split_findings(cell) if f not in allowed]
        if unknown or not cell:
            what = f"unknown finding(s) {unknown}" if unknown else "empty findings"
            problems.append(Problem(line_of(i), "findings", f"{what}; expected NIH findings or 'No Finding'"))
    return problems


def _duplicates_for_check(df, root, args, problems):
    """Duplicate pairs among rows whose file exists (hashing needs --duplicates or hash columns)."""
    from cxrlib.data.dedup import find_duplicates
    from cxrlib.data.manifest import Problem, leaves_root

    has_hashes = {"sha1", "phash"} <= set(df.columns) and (df["phash"] != "").all()
    if not (args.duplicates or has_hashes):
        return None
    ok = df[[not leaves_root(p) and (root / p).is_file() for p in df["path"]]].reset_index(drop=True)
    bad_hash = {p.line for p in problems if p.column in ("sha1", "phash")}
    if bad_hash:  # malformed hash cells are reported above; recompute them
        ok = ok.assign(sha1="", phash="") if args.duplicates else ok.iloc[0:0]
    if args.duplicates:
        try:
            from cxrlib.data.prepare import hash_rows  # decompression bombs named by line

            ok = hash_rows(ok, root)
        except ValueError as exc:
            problems.append(Problem(None, "path", str(exc)))
            return None
    verify = args.duplicates or args.images  # pixels read anyway: verify near duplicates on them
    pairs = find_duplicates(ok, root=root if verify else None, **({} if verify else {"max_distance": 0}))
    for a, b, kind in zip(pairs["path_a"], pairs["path_b"], pairs["kind"]):
        problems.append(Problem(None, "path", f"{kind} duplicate images: {a} and {b}", severity="warning"))
    return pairs


@_handled
def cmd_split(args: argparse.Namespace) -> int:
    """Add patient-grouped, class-stratified folds and/or a hold-out split."""
    from cxrlib.data.manifest import write_manifest
    from cxrlib.data.splits import check_leakage, group_keys, holdout_split, kfold_split, split_summary

    df = _read(args.manifest)
    if not args.folds and not args.test_size and not args.val_size:
        raise CLIError("nothing to do: give --folds K and/or --test-size/--val-size")
    _output(args.output)
    if args.label_col not in df.columns:
        raise CLIError(f"{args.manifest}: --label-col {args.label_col!r} is not a column; columns: "
                       f"{', '.join(df.columns)}")
    refused = _crossing_before_split(df)
    if refused:
        for p in refused[:20]:
            print(f"{args.manifest}: {p}", file=sys.stderr)
        print(f"error: {args.manifest}: {len(refused)} image(s) listed twice; one file must have one row "
              "(run `cxr data dedup` or remove the repeated rows)", file=sys.stderr)
        return EXIT_PROBLEMS
    group_col = "patient_group" if "patient_group" in df.columns and (df["patient_group"] != "").all() \
        else "patient_id"
    if args.folds:
        from cxrlib.data.selection import few_patient_classes

        few = few_patient_classes(df.assign(_g=group_keys(df, group_col)), args.folds, "_g", args.label_col)
        for cls, n in few.items():
            print(f"warning: class {cls!r} has {n} patient(s), fewer than {args.folds} folds: "
                  "some folds have none", file=sys.stderr)
        df = kfold_split(df, args.folds, seed=args.seed, label_col=args.label_col, group_col=group_col)
    if args.test_size or args.val_size:
        df = holdout_split(df, args.test_size, args.val_size, seed=args.seed, label_col=args.label_col,
                           group_col=group_col, keep_existing_test=not args.ignore_existing_test)
    problems = check_leakage(df) + (check_leakage(df, group_col=group_col) if group_col != "patient_id" else [])
    if problems:
        for p in problems[:20]:
            print(f"leakage: {p}", file=sys.stderr)
        return EXIT_PROBLEMS
    write_manifest(df, args.output)
    print(f"wrote {args.output}")
    for col in ("fold", "split"):
        if col in df.columns and (df[col] != "").any():
            print(split_summary(df, col, args.label_col).to_string())
    return EXIT_OK


def _crossing_before_split(df: pd.DataFrame) -> list:
    """Rows whose file (same path, or same sha1) is listed again: they could land in two parts."""
    from cxrlib.data.manifest import Problem, line_of

    problems = []
    for col in ("path", "sha1"):
        if col not in df.columns:
            continue
        values = df[col].astype(str)
        again = values.duplicated(keep=False) & (values != "")
        for value, rows in df.index[again].groupby(values[again]).items():
            lines = ", ".join(str(line_of(i)) for i in rows)
            problems.append(Problem(line_of(rows[0]), col, f"the same image file ({col} {value}) is on lines {lines}"))
    return problems


@_handled
def cmd_dedup(args: argparse.Namespace) -> int:
    """Merge manifests, find exact and near duplicates, keep one image per group."""
    from cxrlib.data.dedup import drop_duplicates, find_duplicates
    from cxrlib.data.manifest import ManifestError, hash_problems, write_manifest
    from cxrlib.data.prepare import hash_rows

    frames = [_read(m) for m in args.manifests]
    for name, frame in zip(args.manifests, frames):
        bad = hash_problems(frame)
        if bad:
            raise ManifestError(name, bad)
    df = pd.concat(frames, ignore_index=True).fillna("")
    root = Path(args.root)
    if not root.is_dir():
        raise CLIError(f"data root not found: {root}")
    _output(args.output)
    _output(args.report, "--report")
    dup = df["path"].duplicated()
    if dup.any():
        raise CLIError(f"the manifests list {int(dup.sum())} path(s) twice, e.g. {df.loc[dup, 'path'].iloc[0]}")
    df = hash_rows(df, root, progress=args.progress)
    pairs = find_duplicates(df, root=root, max_distance=args.max_distance, min_correlation=args.min_correlation,
                            cross_source_only=args.cross_source_only)
    prefer = tuple(s for s in (args.prefer or "").split(",") if s)
    kept, removed = drop_duplicates(df, pairs, prefer=prefer)
    write_manifest(kept, args.output)
    print(f"{len(df)} images, {len(pairs)} duplicate pair(s) "
          f"({(pairs['source_a'] != pairs['source_b']).sum()} across sources); removed {len(removed)}; "
          f"wrote {len(kept)} rows to {args.output}")
    for (sa, sb, kind), n in pairs.groupby(["source_a", "source_b", "kind"]).size().items():
        print(f"  {sa} / {sb} {kind}: {n}")
    if args.report:
        from cxrlib.io import write_csv

        write_csv(args.report, pairs, index=False)
        print(f"pairs written to {args.report}")
    return EXIT_OK


@_handled
def cmd_phantoms(args: argparse.Namespace) -> int:
    """Generate the synthetic phantom dataset (images + masks + manifest)."""
    try:
        from cxrlib.data.phantoms import generate_phantoms
    except ImportError as exc:
        raise CLIError(f"phantom generator not available: {exc}") from exc
    kwargs = dict(seed=args.seed, shortcut_strength=args.shortcut_strength)
    if args.size:
        kwargs["image_size"] = args.size
    path = generate_phantoms(args.out_dir, args.task, args.n, **kwargs)
    _print_counts(_read(str(path)), f"wrote {path}")
    return EXIT_OK


@_handled
def cmd_build_manifests(args: argparse.Namespace) -> int:
    """Regenerate data_manifests/ from a data root of downloaded collections."""
    from cxrlib.data.adapters.collections import parse_datasets
    from cxrlib.data.build import build_all

    build_all(args.data_root, args.output, recipes=args.recipe or None, seed=args.seed, folds=args.folds,
              test_size=args.test_size, val_size=args.val_size, datasets=parse_datasets(args.dataset))
    print(f"wrote {args.output}/README.md")
    return EXIT_OK


# --------------------------------------------------------------------------- parser
def register(subparsers) -> None:
    """Add ``cxr data ...`` to the ``cxr`` command."""
    from cxrlib.data.adapters import ADAPTERS
    from cxrlib.data.dedup import DEFAULT_MAX_DISTANCE, DEFAULT_MIN_CORRELATION
    from cxrlib.data.taxonomy import TASKS

    tasks = sorted(set(TASKS) | {t.replace("_", "-") for t in TASKS} | {"source"})
    data = subparsers.add_parser("data", help="manifests, checks, splits, deduplication, phantoms")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda a: (data.print_help(), EXIT_BAD_INPUT)[1])

    p = sub.add_parser("manifest", help="manifest of one dataset in its published layout")
    p.add_argument("source", choices=sorted(ADAPTERS))
    p.add_argument("root", help="the dataset folder")
    p.add_argument("-o", "--output", required=True, help="manifest CSV to write")
    p.add_argument("--task", choices=tasks, help="map labels to this task (default: findings only)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="adapter option, e.g. csv=table.csv, class_map=COVID:covid19 (repeatable)")
    p.add_argument("--skipped", metavar="CSV", help="also write the skipped rows with their reasons")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("check", help="schema, files, images, duplicates, leakage; exit 1 on any error")
    p.add_argument("manifest")
    p.add_argument("--root", required=True, help="data root the paths are relative to")
    p.add_argument("--task", choices=tasks, help="check labels against this task's classes")
    p.add_argument("--images", action="store_true", help="also decode every image")
    p.add_argument("--duplicates", action="store_true", help="hash every image to find duplicates (slow)")
    p.add_argument("--limit", type=int, default=50, help="problems to print (default 50)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("split", help="patient-grouped, class-stratified folds / hold-out split")
    p.add_argument("manifest")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--folds", type=int, default=0, help="number of folds (fold column)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-size", type=float, default=0.0, help="hold-out test fraction (split column)")
    p.add_argument("--val-size", type=float, default=0.0, help="hold-out validation fraction")
    p.add_argument("--label-col", default="label")
    p.add_argument("--ignore-existing-test", action="store_true", help="redraw rows already marked test")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("dedup", help="merge manifests and remove duplicate images")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--root", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--report", help="CSV of the duplicate pairs found")
    p.add_argument("--prefer", help="sources to keep first, comma-separated")
    p.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE,
                   help=f"phash bits of near-duplicate candidates (default {DEFAULT_MAX_DISTANCE})")
    p.add_argument("--min-correlation", type=float, default=DEFAULT_MIN_CORRELATION,
                   help=f"thumbnail correlation to confirm a near duplicate (default {DEFAULT_MIN_CORRELATION})")
    p.add_argument("--cross-source-only", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_dedup)

    p = sub.add_parser("phantoms", help="generate synthetic chest radiograph phantoms")
    p.add_argument("out_dir")
    p.add_argument("--task", required=True, choices=["source", "paper-a", "paper-b", "paper_a", "paper_b",
                                                     "nih14", "paper-b-viral", "paper_b_viral"])
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="image side in pixels")
    p.add_argument("--shortcut-strength", type=float, default=0.0,
                   help="probability that a burnt-in text marker agrees with the class")
    p.set_defaults(func=cmd_phantoms)

    p = sub.add_parser("build-manifests", help="regenerate data_manifests/ from downloaded collections")
    p.add_argument("data_root")
    p.add_argument("-o", "--output", default="data_manifests")
    p.add_argument("--recipe", action="append", help="recipe name (repeatable; default all)")
    p.add_argument("--dataset", "--dir", action="append", metavar="COLLECTION=PATH",
                   help="folder of a collection stored elsewhere or under another name, e.g. nih=/mnt/nih "
                        "(repeatable; default: found by its published folder names)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--val-size", type=float, default=0.1)
    p.set_defaults(func=cmd_build_manifests)

    from cxrlib.data.rehearse import register_rehearse  # cxr data rehearse (issue 9)

    register_rehearse(sub)

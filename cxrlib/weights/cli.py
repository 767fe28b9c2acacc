"""``cxr weights list | import | verify``: PyTorch DenseNet checkpoints as Keras models."""

from __future__ import annotations

import json
import sys


def _int_size(v: str) -> int:
    n = int(v)
    if n < 32:
        raise ValueError("image size must be >= 32")
    return n


def cmd_list(args) -> int:
    from cxrlib.weights import registry

    for ws in registry.WEIGHT_SETS.values():
        cached = registry.cache_path(ws)
        state = "cached" if cached.is_file() else "not cached"
        named = [c for c in ws.classes if not c.startswith("unused_")]
        print(f"{ws.name:28s} {ws.channels}-ch {ws.image_size}px {len(ws.classes)} outputs "
              f"({len(named)} trained), {ws.preprocessing.name} normalisation, {state}: {cached}")
        print(f"{'':28s} {ws.description}\n{'':28s} {ws.url}")
    return 0


def cmd_import(args) -> int:
    from cxrlib.weights.load import import_densenet, save_imported

    imported = import_densenet(args.checkpoint, classes=args.classes, image_size=args.image_size,
                               channels=args.channels, activation=args.activation,
                               preprocessing=args.preprocessing)
    h5, meta = save_imported(imported, args.output)
    spec = imported.spec
    print(f"{imported.info['init']}: {spec.name} (growth {spec.growth_rate}, blocks "
          f"{list(spec.blocks)}, {spec.in_channels}-channel stem), {imported.info['format']} "
          f"checkpoint, weights from {imported.info['weights_from']}")
    print(f"head: {len(imported.classes)} outputs ({imported.info['classes_from']}): "
          f"{', '.join(imported.classes)}")
    pre = imported.preprocessing
    print(f"input: {tuple(imported.model.input_shape[1:])}, normalisation {pre.name} "
          f"(x/255 - {list(pre.mean)}) / {list(pre.std)}")
    print(f"wrote {h5} and {meta}")
    return 0


def cmd_verify(args) -> int:
    import tempfile
    from pathlib import Path

    try:
        from cxrlib.weights import torch_reference
        torch_reference._import_torch()
    except ImportError as exc:
        print(f"cxr weights verify: {exc}", file=sys.stderr)
        return 2
    from cxrlib.weights.verify import verify

    keras_model = None
    if args.model:
        from cxrlib.models import load_model
        keras_model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        ref = args.checkpoint
        if args.random:
            from cxrlib.weights.densenet import DenseNetSpec
            blocks = {"densenet121": (6, 12, 24, 16), "densenet169": (6, 12, 32, 32),
                      "densenet201": (6, 12, 48, 32)}[args.random]
            ref = Path(tmp) / f"random-{args.random}.pt"
            torch_reference.random_checkpoint(ref, DenseNetSpec(blocks, in_channels=args.channels or 3,
                                                                n_classes=14), seed=args.seed)
        elif not ref:
            print("cxr weights verify: give a CHECKPOINT or --random densenet121", file=sys.stderr)
            return 2
        result = verify(ref, image_size=args.image_size or 224, n_images=args.n_images,
                        seed=args.seed, keras_model=keras_model)
    result["tolerance"] = args.tol
    result["ok"] = result["max_abs_logit_diff"] <= args.tol
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def _run(func):
    def wrapped(args):
        from cxrlib.weights.checkpoint import CheckpointError
        from cxrlib.weights.densenet import NotADenseNet
        from cxrlib.weights.registry import WeightsUnavailable

        try:
            return func(args)
        except (FileNotFoundError, CheckpointError, NotADenseNet, WeightsUnavailable, ValueError,
                KeyError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"cxr weights {args.weights_command}: error: {msg}", file=sys.stderr)
            return 2
    return wrapped


def register(subparsers) -> None:
    """Add ``weights`` (list, import, verify) to the ``cxr`` command."""
    p = subparsers.add_parser(
        "weights", help="import PyTorch DenseNet checkpoints (CheXNet, torchxrayvision) as Keras models",
        description="Read torchvision-layout DenseNet checkpoints without PyTorch and build the flat "
                    "Keras model cxrlib trains (same layer names as keras.applications.DenseNet121).")
    sub = p.add_subparsers(dest="weights_command", metavar="COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    ls = sub.add_parser("list", help="known published weight sets and whether they are cached")
    ls.set_defaults(func=_run(cmd_list))

    im = sub.add_parser("import", help="checkpoint -> Keras model.h5 (+ model.json: classes, normalisation)")
    im.add_argument("checkpoint", help="a known weight set (cxr weights list), a URL or a checkpoint file")
    im.add_argument("-o", "--output", required=True, help="output .h5 (a .json with the same stem is written beside it)")
    im.add_argument("--classes", help="a task (nih14: head reordered to cxrlib's 14 NIH findings) or "
                                      "comma-separated names of the checkpoint's outputs")
    im.add_argument("--image-size", type=_int_size, help="input size (default: the weight set's, 224)")
    im.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: the checkpoint's stem)")
    im.add_argument("--activation", default="sigmoid", choices=("sigmoid", "softmax"))
    im.add_argument("--preprocessing", choices=("imagenet", "xrv"),
                    help="input normalisation (default: the weight set's, else imagenet)")
    im.set_defaults(func=_run(cmd_import))

    ve = sub.add_parser("verify", help="compare Keras and PyTorch logits (needs torch)")
    ve.add_argument("checkpoint", nargs="?", help="a known weight set, a URL or a checkpoint file")
    ve.add_argument("--random", choices=("densenet121", "densenet169", "densenet201"),
                    help="verify on a randomly initialised torchvision-layout network instead")
    ve.add_argument("--model", help="compare this saved .h5 (from `cxr weights import`) instead of a fresh import")
    ve.add_argument("--image-size", type=_int_size, default=None)
    ve.add_argument("--channels", type=int, choices=(1, 3), help="stem channels of --random (default 3)")
    ve.add_argument("--n-images", type=int, default=2)
    ve.add_argument("--seed", type=int, default=0)
    ve.add_argument("--tol", type=float, default=1e-4, help="max abs logit difference allowed (exit 1 above)")
    ve.set_defaults(func=_run(cmd_verify))

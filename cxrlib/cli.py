"""The ``cxr`` command (also ``python -m cxrlib``).

Subcommands are registered by the module that owns them, so each stays next to its logic:
``cxr data ...`` (cxrlib.data.cli), ``cxr run ...`` and ``cxr demo`` (cxrlib.report.cli).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, function that adds its subcommands to the subparsers object)
_REGISTRARS = (
    ("cxrlib.data.cli", "register"),
    ("cxrlib.report.cli", "register"),
    ("cxrlib.weights.cli", "register"),
    ("cxrlib.predict_cli", "register"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr",
        description="cxrlib: reproduce and stress-test transfer learning on chest X-rays.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, func in _REGISTRARS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a subpackage not written yet
            if exc.name != module:
                raise
            continue
        getattr(mod, func)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

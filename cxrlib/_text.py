"""Shared text helpers at the bottom of cxrlib (imports nothing from cxrlib).

- ``shown_list(items, limit=20)``: the first ``limit`` items, one per line, then
  ``... and N more`` -- the problem lists of ManifestError, LeakageError, BadImageError and
  ``cxr data check``.
- ``parse_key_values(items, option="--set")``: ``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}``
  for ``--set`` / ``--opt`` / ``--dir`` options; a malformed item or an empty key is an error
  naming the option and the item; a repeated key takes the last value (as on most command lines).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

__all__ = ["shown_list", "parse_key_values"]


def shown_list(items: Sequence[Any], limit: int = 20, sep: str = "\n  ") -> str:
    """``str`` of the first ``limit`` items joined by ``sep``, plus ``... and N more`` when cut.

    Args:
        items: the things to show (their ``str``).
        limit: how many to show.
        sep: separator (also put before the ``... and N more`` line).
    """
    shown = sep.join(str(x) for x in list(items)[:limit])
    more = len(items) - limit
    return shown + (f"{sep}... and {more} more" if more > 0 else "")


def parse_key_values(items: Iterable[str] | None, option: str = "--set",
                     example: str = "KEY=VALUE", form: str = "KEY=VALUE") -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` options into a dict (values stay strings).

    Raises:
        ValueError: an item without ``=`` or with an empty key; the message names ``option``,
            the item and an ``example``.
    """
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"{option} {item!r} is not of the form {form} (e.g. {option} {example})")
        out[key] = value
    return out

"""Output for people (aligned tables) and programs (``--format json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydp.errors import ConfigError

__all__ = ["add_object_verbs", "emit", "parse_kv", "table"]


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Aligned columns with UPPERCASE headers, for people."""
    cells = [[h.upper() for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def emit(fmt: str, rows: list[dict[str, Any]], headers: Sequence[str]) -> None:
    """Print rows as a table (headers pick and order the columns) or as JSON."""
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(table([[r[h] for h in headers] for r in rows], headers))


def parse_kv(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``KEY=VALUE`` flags (``-o``, ``--label``) as a dict; a malformed one names the flag."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f'{flag}: expected KEY=VALUE, got "{item}"')
        out[key] = value
    return out


def add_object_verbs(
    verbs: Any,
    noun: str,
    handlers: tuple[Callable[..., int], Callable[..., int], Callable[..., int]],
    quiet: bool = True,
    rm_help: str | None = None,
) -> None:
    """The ``ls``, ``inspect`` and ``rm`` verbs every kind of object has, Docker's shape:
    ``handlers`` are (ls, inspect, rm); inspect and rm take one or more names in
    ``args.<noun>``."""
    ls, inspect, rm = handlers
    p = verbs.add_parser("ls", help=f"list {noun}s")
    p.add_argument("--format", choices=["table", "json"], default="table")
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="ids only")
    p.set_defaults(func=ls)
    p = verbs.add_parser("inspect", help=f"show {noun}s as JSON")
    p.add_argument(noun, nargs="+", metavar=noun.upper())
    p.set_defaults(func=inspect)
    p = verbs.add_parser("rm", help=rm_help or f"remove {noun}s")
    p.add_argument(noun, nargs="+", metavar=noun.upper())
    p.set_defaults(func=rm)

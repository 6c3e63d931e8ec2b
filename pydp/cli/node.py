"""``pydp node ls``: the nodes sharing the store, their state, and which one this is."""

from __future__ import annotations

import argparse
from typing import Any

from pydp.agent import PydpHost
from pydp.cli._output import emit
from pydp.control.nodes import DOWN, READY

__all__ = ["add_parser"]

COLUMNS = ["name", "address", "state", "self"]


def _ls(host: PydpHost, a: argparse.Namespace) -> int:
    """Every node the store knows: ready while its key exists (its agent's lease keeps it),
    down when only its networks or sandboxes remain; SELF marks this node."""
    ctl = host.controller
    registered = {n.name: n for n in ctl.nodes()}
    names = ctl.node_names()
    if a.quiet:
        print("\n".join(names))
        return 0
    rows: list[dict[str, Any]] = []
    for name in names:
        node = registered.get(name)
        is_self = name == ctl.node
        rows.append(
            {
                "name": name,
                "address": "" if node is None or node.address is None else str(node.address),
                "state": DOWN if node is None else READY,
                "self": is_self if a.format == "json" else ("*" if is_self else ""),
            }
        )
    emit(a.format, rows, COLUMNS)
    return 0


def add_parser(sub: Any) -> None:
    verbs = sub.add_parser("node", help="the nodes sharing the store").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    ls = verbs.add_parser("ls", help="list nodes (STATE ready: its agent is registered)")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.add_argument("-q", "--quiet", action="store_true", help="names only")
    ls.set_defaults(func=_ls)

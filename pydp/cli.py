"""The ``pydp`` command line: Docker's nouns and flags, iproute2's words for the datapath."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydp.errors import PydpError

__all__ = ["main"]

log = logging.getLogger("pydp")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``Error:`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message} (see '{self.prog} --help')\n")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Aligned columns with UPPERCASE headers, for people."""
    cells = [[h.upper() for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _emit(fmt: str, rows: list[dict[str, Any]], headers: Sequence[str]) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(table([[r[h] for h in headers] for r in rows], headers))


def cmd_metrics(args: argparse.Namespace) -> int:
    from pydp.loader import Map
    from pydp.maps import METRICS_MAP, MetricsMap, reason_name

    with Map.open_pinned(METRICS_MAP, args.bpffs) as raw:
        counts = MetricsMap(raw).snapshot()
    rows = [
        {"reason": reason_name(k), "packets": c.packets, "bytes": c.bytes}
        for k, c in sorted(counts.items())
        if c.packets or args.all
    ]
    _emit(args.format, rows, ["reason", "packets", "bytes"])
    return 0


def cmd_endpoint_ls(args: argparse.Namespace) -> int:
    from pydp.loader import Map
    from pydp.maps import ENDPOINT_MAP, EndpointMap

    with Map.open_pinned(ENDPOINT_MAP, args.bpffs) as raw:
        entries = EndpointMap(raw).snapshot()
    rows = [
        {"address": str(ip), "ifindex": ep.ifindex, "mac": str(ep.mac)}
        for ip, ep in sorted(entries.items())
    ]
    _emit(args.format, rows, ["address", "ifindex", "mac"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pydp import demo

    return demo.main()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pydp", description="An eBPF datapath for container networks.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    p.add_argument(
        "--bpffs",
        type=Path,
        default=None,
        help="pin root (default $PYDP_BPFFS or /sys/fs/bpf/pydp)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    m = sub.add_parser("metrics", help="packets counted per verdict and drop reason")
    m.add_argument("--format", choices=["table", "json"], default="table")
    m.add_argument("-a", "--all", action="store_true", help="include reasons never counted")
    m.set_defaults(func=cmd_metrics)

    ep = sub.add_parser("endpoint", help="the endpoint map").add_subparsers(
        dest="verb", metavar="VERB", required=True, parser_class=_Parser
    )
    ls = ep.add_parser("ls", help="list local endpoints")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.set_defaults(func=cmd_endpoint_ls)

    d = sub.add_parser("demo", help="two containers talking through from_container")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.bpffs is None:
        from pydp.loader import bpffs_root

        args.bpffs = bpffs_root()
    try:
        return int(args.func(args))
    except PydpError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

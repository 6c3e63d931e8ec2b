"""The ``pydp`` command line: Docker's nouns and flags, iproute2's words for the datapath.

Every change is written to the store and then applied to the kernel at once
(no daemon is needed on one host). Errors are one ``Error:`` line on stderr;
exit status 0 on success, 1 on failure, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydp.agent import PydpHost
from pydp.cli import datapath, network, node, sandbox, service
from pydp.cli._output import emit, parse_kv, table
from pydp.errors import PydpError

__all__ = ["build_parser", "emit", "main", "parse_kv", "table"]

log = logging.getLogger("pydp")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``Error:`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message} (see '{self.prog} --help')\n")


def _demo(a: argparse.Namespace) -> int:
    from pydp import demo

    return demo.main()


def _reset(host: PydpHost, a: argparse.Namespace) -> int:
    host.reset()
    return 0


def _config(host: PydpHost, a: argparse.Namespace) -> int:
    if a.nat_ports is not None or a.xdp is not None:
        host.controller.configure(nat_ports=a.nat_ports, xdp=a.xdp)
        host.apply()
    settings = host.controller.settings()
    lo, hi = settings.nat_ports
    print(f"nat-ports {lo}-{hi}\nxdp {settings.xdp}")
    return 0


def _reconcile(host: PydpHost, a: argparse.Namespace) -> int:
    host.apply()
    return 0


def _agent(host: PydpHost, a: argparse.Namespace) -> int:
    from pydp.agent.agent import Agent
    from pydp.control.ipam import parse_address

    address = (
        None if a.advertise_addr is None else parse_address("--advertise-addr", a.advertise_addr)
    )
    agent = Agent(host, address)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop.set())
    agent.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pydp", description="An eBPF datapath for container networks.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    p.add_argument("--bpffs", type=Path, help="pin root (default $PYDP_BPFFS or /sys/fs/bpf/pydp)")
    p.add_argument(
        "--state-dir", type=Path, help="state (default $PYDP_STATE_DIR or /var/lib/pydp)"
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="the store shared by many hosts: etcd://HOST:PORT[,HOST:PORT...][/PREFIX], or"
        " etcds://...?cacert=FILE&cert=FILE&key=FILE for TLS (PREFIX default /pydp;"
        " default: $PYDP_STORE, else SQLite in the state dir)",
    )
    p.add_argument(
        "--uplink",
        help="the interface for masquerade and published ports (default: $PYDP_UPLINK,"
        " else the one holding the default route)",
    )
    p.add_argument(
        "--node",
        help="the node this host is in the cluster (default: $PYDP_NODE, else the host name)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    node.add_parser(sub)
    network.add_parser(sub)
    sandbox.add_parser(sub)
    service.add_parser(sub)
    datapath.add_parser(sub)
    system = sub.add_parser("system", help="the whole pydp host").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    reset = system.add_parser("reset", help="remove every sandbox, network, link and pin")
    reset.add_argument("-f", "--force", action="store_true", help="do not ask (pydp never asks)")
    reset.set_defaults(func=_reset)
    cfg = system.add_parser("config", help="show or change host-wide settings")
    cfg.add_argument("--nat-ports", metavar="FIRST-LAST", help="masquerade source port range")
    cfg.add_argument(
        "--xdp", metavar="on|off|auto", help="XDP fast path on the uplink (auto: unless a veth)"
    )
    cfg.set_defaults(func=_config)
    rec = system.add_parser("reconcile", help="converge the kernel to the stored state now")
    rec.set_defaults(func=_reconcile)
    ag = sub.add_parser(
        "agent", help="run this node: register it, reconcile, and follow the store's changes"
    )
    ag.add_argument(
        "--advertise-addr",
        metavar="IP",
        help="this node's underlay address, where tunnels come (default: the uplink's)",
    )
    ag.set_defaults(func=_agent)
    d = sub.add_parser("demo", help="two containers talking through from_container")
    d.set_defaults(func=_demo, needs_host=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.bpffs is None:
            from pydp.loader import bpffs_root

            args.bpffs = bpffs_root()
        if not getattr(args, "needs_host", True):
            return int(args.func(args))
        with PydpHost(
            args.state_dir, args.bpffs, args.uplink, node=args.node, store=args.store
        ) as host:
            if args.func is not _reset:
                host.repair()
            return int(args.func(host, args))
    except PydpError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

"""``pydp metrics`` and ``pydp endpoint ls``: the pinned maps of this host's datapath."""

from __future__ import annotations

import argparse
from typing import Any

from pydp.cli._output import emit
from pydp.loader import Map
from pydp.maps import ENDPOINT_MAP, METRICS_MAP, EndpointMap, MetricsMap, reason_name
from pydp.maps.endpoint import Scoped, address_of

__all__ = ["add_parser"]


def _metrics(a: argparse.Namespace) -> int:
    with Map.open_pinned(METRICS_MAP, a.bpffs) as raw:
        counts = MetricsMap(raw).snapshot()
    rows = [
        {"reason": reason_name(k), "packets": c.packets, "bytes": c.bytes}
        for k, c in sorted(counts.items())
        if c.packets or a.all
    ]
    emit(a.format, rows, ["reason", "packets", "bytes"])
    return 0


def _endpoint_ls(a: argparse.Namespace) -> int:
    with Map.open_pinned(ENDPOINT_MAP, a.bpffs) as raw:
        entries = EndpointMap(raw).snapshot()
    ordered = sorted(
        entries.items(),
        key=lambda kv: (kv[0].scope if isinstance(kv[0], Scoped) else 0, address_of(kv[0])),
    )
    rows = [
        {"address": str(address_of(k)), "ifindex": ep.ifindex, "mac": str(ep.mac),
         "network": ep.network, "scope": k.scope if isinstance(k, Scoped) else 0}
        for k, ep in ordered
    ]  # fmt: skip
    emit(a.format, rows, ["address", "ifindex", "mac", "network", "scope"])
    return 0


def add_parser(sub: Any) -> None:
    m = sub.add_parser("metrics", help="packets counted per verdict and drop reason")
    m.add_argument("--format", choices=["table", "json"], default="table")
    m.add_argument("-a", "--all", action="store_true", help="include reasons never counted")
    m.set_defaults(func=_metrics, needs_host=False)

    ep = sub.add_parser("endpoint", help="the datapath's endpoint map").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    ls = ep.add_parser("ls", help="list local endpoints")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.set_defaults(func=_endpoint_ls, needs_host=False)

"""``pydp network create|ls|inspect|rm|connect|disconnect|prune``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pydp.agent import PydpHost
from pydp.cli._output import add_object_verbs, emit, parse_kv
from pydp.control.driver import VXLANID_LIST
from pydp.control.model import GLOBAL, Network

__all__ = ["add_parser", "network_json"]


def network_json(host: PydpHost, net: Network) -> dict[str, Any]:
    """A network as ``network inspect`` shows it (Docker's field names)."""
    sandboxes = {s.name: s for s in host.controller.sandboxes()}
    containers = {
        ep.id: {
            "Name": ep.sandbox,
            "EndpointID": ep.id,
            "Interface": ep.ifname,
            "MacAddress": "" if ep.mac is None else str(ep.mac),
            "IPv4Address": ""
            if ep.address is None or net.pool is None
            else f"{ep.address}/{net.pool.subnet.prefixlen}",
            "Netns": sandboxes[ep.sandbox].netns if ep.sandbox in sandboxes else None,
            "Node": ep.node or host.controller.node,
        }
        for ep in host.controller.endpoints(net.id)
    }
    config = []
    if net.pool is not None:
        p = net.pool
        config.append(
            {
                "Subnet": str(p.subnet),
                "IPRange": "" if p.ip_range is None else str(p.ip_range),
                "Gateway": str(p.gateway),
                "AuxiliaryAddresses": {k: str(v) for k, v in p.aux.items()},
            }
        )
    options = dict(net.options)
    if net.vni is not None:  # as Docker shows an overlay's: the VNI chosen, or given
        options[VXLANID_LIST] = str(net.vni)
    return {
        "Name": net.name,
        "Id": net.id,
        "Driver": net.driver,
        "Scope": net.scope,
        "Node": "" if net.scope == GLOBAL else net.node or host.controller.node,
        "IPAM": {"Driver": "default", "Config": config},
        "Options": options,
        "Labels": dict(net.labels),
        "Containers": containers,
    }


def _create(host: PydpHost, a: argparse.Namespace) -> int:
    net = host.controller.create_network(
        a.name,
        a.driver,
        a.subnet,
        a.ip_range,
        a.gateway,
        a.aux_address or (),
        parse_kv(a.opt, "-o/--opt"),
        parse_kv(a.label, "--label"),
    )
    host.apply()
    print(net.id)
    return 0


def _ls(host: PydpHost, a: argparse.Namespace) -> int:
    nets = host.controller.networks()
    if a.quiet:
        print("\n".join(n.id[:12] for n in nets))
        return 0
    rows = [
        {
            "network id": n.id[:12] if a.format == "table" else n.id,
            "name": n.name,
            "driver": n.driver,
            "scope": n.scope,
            "subnet": "" if n.pool is None else str(n.pool.subnet),
        }
        for n in nets
    ]
    emit(a.format, rows, ["network id", "name", "driver", "scope", "subnet"])
    return 0


def _inspect(host: PydpHost, a: argparse.Namespace) -> int:
    nets = [host.controller.network(ref) for ref in a.network]
    print(json.dumps([network_json(host, n) for n in nets], indent=2))
    return 0


def _rm(host: PydpHost, a: argparse.Namespace) -> int:
    for ref in a.network:
        host.controller.remove_network(ref)
        host.apply()
        print(ref)
    return 0


def _connect(host: PydpHost, a: argparse.Namespace) -> int:
    host.controller.connect(a.network, a.sandbox, a.ip)
    host.apply()
    return 0


def _disconnect(host: PydpHost, a: argparse.Namespace) -> int:
    host.controller.disconnect(a.network, a.sandbox)
    host.apply()
    return 0


def _prune(host: PydpHost, a: argparse.Namespace) -> int:
    gone = host.controller.prune()
    host.apply()
    if gone:
        print("Deleted Networks:\n" + "\n".join(n.name for n in gone))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("network", help="manage networks")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    c = verbs.add_parser("create", help="create a network")
    c.add_argument(
        "-d", "--driver", default="bridge", help="bridge (default), overlay, host or null"
    )
    c.add_argument(
        "--subnet",
        help="CIDR, e.g. 10.1.0.0/24 (default: a free Docker pool; overlay: a /24 of 10.0.0.0/8)",
    )
    c.add_argument("--ip-range", help="allocate endpoint addresses from this CIDR only")
    c.add_argument(
        "--gateway", help="the gateway address (default: the subnet's first; bridge: its address)"
    )
    c.add_argument("--aux-address", action="append", metavar="NAME=IP", help="reserve an address")
    c.add_argument("-o", "--opt", action="append", metavar="KEY=VALUE", help="driver option")
    c.add_argument("--label", action="append", metavar="KEY=VALUE")
    c.add_argument("name", metavar="NAME")
    c.set_defaults(func=_create)
    add_object_verbs(verbs, "network", (_ls, _inspect, _rm))

    cn = verbs.add_parser("connect", help="connect a sandbox to a network")
    cn.add_argument("--ip", help="a static IPv4 address")
    cn.add_argument("network", metavar="NETWORK")
    cn.add_argument("sandbox", metavar="SANDBOX")
    cn.set_defaults(func=_connect)

    dc = verbs.add_parser("disconnect", help="disconnect a sandbox from a network")
    dc.add_argument("network", metavar="NETWORK")
    dc.add_argument("sandbox", metavar="SANDBOX")
    dc.set_defaults(func=_disconnect)

    pr = verbs.add_parser("prune", help="remove every network without endpoints")
    pr.add_argument("-f", "--force", action="store_true", help="do not ask (pydp never asks)")
    pr.set_defaults(func=_prune)

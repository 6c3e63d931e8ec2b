"""``pydp service create|ls|inspect|rm|update``: VIPs, ports and backends."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from pydp.agent import PydpHost
from pydp.cli._output import add_object_verbs, emit
from pydp.control.model import Service
from pydp.control.services import parse_spec, parse_weight, publish_mappings

__all__ = ["add_parser", "service_json"]

COLUMNS = ["name", "id", "network", "mode", "vip", "ports", "backends"]


def _ports(svc: Service) -> str:
    """Each service port, as HOST_PORT->PORT/PROTO where it is published."""
    out = []
    for sp in svc.ports:
        hosts = [h for h, p in svc.publish if p == sp]
        out.extend([f"{h}->{sp}" for h in hosts] or [str(sp)])
    return ",".join(out)


def service_json(host: PydpHost, svc: Service) -> dict[str, Any]:
    """A service as ``service inspect`` shows it."""
    nets = {n.id: n for n in host.controller.networks()}
    net = nets.get(svc.network_id)
    created = datetime.datetime.fromtimestamp(svc.created, datetime.UTC)
    lb = None
    if svc.mode == "vip":
        lb = {"Mode": svc.lb, "MaglevSize": svc.maglev_size, "TableSize": svc.table_size()}
    return {
        "Name": svc.name,
        "Id": svc.id,
        "Index": svc.index,
        "CreatedAt": created.isoformat().replace("+00:00", "Z"),
        "Network": "" if net is None else net.name,
        "NetworkID": svc.network_id,
        "Scope": "" if net is None else net.scope,
        "Mode": svc.mode,
        "VIP": "" if svc.vip is None else str(svc.vip),
        "Ports": [str(p) for p in svc.ports],
        "PublishedPorts": [
            {"PublishedPort": h, "TargetPort": p.port, "Protocol": p.proto} for h, p in svc.publish
        ],
        "LoadBalancer": lb,
        "Backends": [
            {
                "Backend": b.spec,
                "Sandbox": b.sandbox or "",
                "Node": "" if b.sandbox is None else b.node or host.controller.node,
                "Address": str(b.address),
                "Port": b.port,
                "Weight": b.weight,
                "State": "draining" if b.draining else "active",
            }
            for b in svc.backends
        ],
    }


def _create(host: PydpHost, a: argparse.Namespace) -> int:
    spec = parse_spec(a.port or [], a.vip, a.mode, a.publish or [], a.lb, a.maglev_size)
    host.reconciler.check_ports(publish_mappings(spec.publish))  # as -p: a process's port
    svc = host.controller.create_service(
        a.name,
        a.network,
        spec.ports,
        spec.vip,
        spec.mode,
        spec.publish,
        a.backend or [],
        spec.lb,
        spec.maglev_size,
    )
    host.apply()
    print(svc.id)
    return 0


def _ls(host: PydpHost, a: argparse.Namespace) -> int:
    svcs = host.controller.services()
    if a.quiet:
        print("\n".join(s.id[:12] for s in svcs))
        return 0
    nets = {n.id: n.name for n in host.controller.networks()}
    rows = [
        {
            "name": s.name,
            "id": s.id[:12] if a.format == "table" else s.id,
            "network": nets.get(s.network_id, ""),
            "mode": s.mode,
            "vip": "" if s.vip is None else str(s.vip),
            "ports": _ports(s),
            "backends": f"{len(s.active_backends())}/{len(s.backends)}",
        }
        for s in svcs
    ]
    emit(a.format, rows, COLUMNS)
    return 0


def _inspect(host: PydpHost, a: argparse.Namespace) -> int:
    svcs = [host.controller.service(ref) for ref in a.service]
    print(json.dumps([service_json(host, s) for s in svcs], indent=2))
    return 0


def _rm(host: PydpHost, a: argparse.Namespace) -> int:
    for ref in a.service:
        svc = host.controller.remove_service(ref)
        host.apply()
        print(svc.name)
    return 0


def _update(host: PydpHost, a: argparse.Namespace) -> int:
    weights = dict(parse_weight(w) for w in a.weight or [])
    svc = host.controller.update_service(
        a.service, a.backend_add or [], a.backend_rm or [], weights, a.drain
    )
    host.apply()
    print(svc.name)
    return 0


def add_parser(sub: Any) -> None:
    verbs = sub.add_parser("service", help="manage services (VIPs and backends)").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    c = verbs.add_parser("create", help="create a service")
    c.add_argument(
        "--network", required=True, help="a bridge network, or an overlay (a global service)"
    )
    c.add_argument("--vip", help="the virtual IPv4 address (default: the network's next free)")
    c.add_argument(
        "--port", action="append", metavar="PORT[/PROTO]", help="a port the VIP serves (tcp)"
    )
    c.add_argument("--mode", default="vip", help="vip (default) or dnsrr (no VIP)")
    c.add_argument(
        "-p",
        "--publish",
        action="append",
        metavar="HOST_PORT:PORT[/PROTO]",
        help="publish a service port on the host's uplink",
    )
    c.add_argument(
        "--backend",
        action="append",
        metavar="SANDBOX[:PORT]|IP:PORT",
        help="a backend (PORT: default the service port)",
    )
    c.add_argument("--lb", default="maglev", help="maglev (default) or random")
    c.add_argument("--maglev-size", metavar="M", help="Maglev table size: a prime, 251-131071")
    c.add_argument("name", metavar="NAME")
    c.set_defaults(func=_create)
    add_object_verbs(verbs, "service", (_ls, _inspect, _rm))

    u = verbs.add_parser("update", help="change a service's backends")
    u.add_argument("--backend-add", action="append", metavar="SANDBOX[:PORT]|IP:PORT")
    u.add_argument("--backend-rm", action="append", metavar="BACKEND")
    u.add_argument(
        "--weight", action="append", metavar="BACKEND=WEIGHT", help="0 takes no new connections"
    )
    u.add_argument(
        "--drain",
        action="store_true",
        help="removed backends take no new connections but keep their live ones"
        " (default: reset them)",
    )
    u.add_argument("service", metavar="SERVICE")
    u.set_defaults(func=_update)

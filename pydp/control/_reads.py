"""The controller's reads inside a transaction, and what one node sees of the cluster.

A node sees the global networks and its own local ones (`Network.visible_on`), and the
services of the networks it sees; sandboxes and their names are cluster-wide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from netaddr import IPAddress

from pydp.control.model import (
    ENDPOINTS,
    GLOBAL,
    NETWORKS,
    SANDBOXES,
    SERVICES,
    Endpoint,
    Network,
    Sandbox,
    Service,
    ServiceBackend,
    endpoint_prefix,
    sandbox_key,
    service_key,
)
from pydp.control.ports import PortMapping
from pydp.control.services import BackendRef, publish_mappings, resolve_backends
from pydp.errors import NotFoundError
from pydp.store import Txn

__all__ = [
    "drop_backends",
    "endpoints",
    "find",
    "find_network",
    "find_sandbox",
    "find_service",
    "network_addresses",
    "networks",
    "overlapping_addresses",
    "published",
    "resolve",
    "services",
    "used_addresses",
    "visible_networks",
    "visible_services",
]


def networks(t: Txn) -> list[Network]:
    """Every network of every node."""
    return [Network.from_json(e.value) for e in t.list(NETWORKS)]


def visible_networks(t: Txn, node: str) -> list[Network]:
    """The networks ``node`` sees: the global ones and its own."""
    return [n for n in networks(t) if n.visible_on(node)]


class _Named(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def find(kind: str, objects: Sequence[N], ref: str) -> N:
    """The object named ``ref``, or with that id, or the one whose id starts with ``ref``
    (3 characters at least), as Docker resolves references."""
    for o in objects:
        if ref in (o.name, o.id):
            return o
    matches = [o for o in objects if len(ref) >= 3 and o.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    raise NotFoundError(f"{kind} {ref} not found")


def find_network(t: Txn, ref: str, node: str) -> Network:
    """A network ``node`` sees, by name, id or unique id prefix."""
    return find("network", visible_networks(t, node), ref)


def find_sandbox(t: Txn, name: str) -> Sandbox:
    """A sandbox of any node (names are unique in the cluster)."""
    e = t.get(sandbox_key(name))
    if e is None:
        raise NotFoundError(f"sandbox {name} not found")
    return Sandbox.from_json(e.value)


def endpoints(t: Txn, network_id: str | None = None) -> list[Endpoint]:
    """The endpoints of one network, or of every network, on every node."""
    prefix = ENDPOINTS if network_id is None else endpoint_prefix(network_id)
    return [Endpoint.from_json(e.value) for e in t.list(prefix)]


def services(t: Txn, network_id: str | None = None) -> list[Service]:
    """The services of one network, or of every network of every node."""
    svcs = [Service.from_json(e.value) for e in t.list(SERVICES)]
    return [s for s in svcs if network_id is None or s.network_id == network_id]


def visible_services(t: Txn, node: str) -> list[Service]:
    """The services ``node`` sees: those of the networks it sees."""
    seen = {n.id for n in visible_networks(t, node)}
    return [s for s in services(t) if s.network_id in seen]


def find_service(t: Txn, ref: str, node: str) -> Service:
    """A service ``node`` sees, by name, id or unique id prefix."""
    return find("service", visible_services(t, node), ref)


def overlapping(t: Txn, net: Network) -> list[Network]:
    """The other networks whose subnets overlap net's on a node that has both (overlay
    networks may share a subnet; two nodes' bridge networks never meet)."""
    if net.pool is None:
        return []
    mine = net.pool.subnet
    return [
        n
        for n in networks(t)
        if n.id != net.id
        and n.pool is not None
        and n.pool.subnet.first <= mine.last
        and mine.first <= n.pool.subnet.last
        and (net.node is None or n.visible_on(net.node))
    ]


def network_addresses(t: Txn, net: Network) -> set[IPAddress]:
    """The network's own addresses in use, on every node: its endpoints' and its VIPs."""
    used = {e.address for e in endpoints(t, net.id) if e.address is not None}
    return used | {s.vip for s in services(t, net.id) if s.vip is not None}


def used_addresses(t: Txn, net: Network) -> set[IPAddress]:
    """The addresses an endpoint of net may not take: net's own, and the VIPs of the
    networks that overlap it -- the datapath keys a service by its VIP alone."""
    nets = {n.id for n in overlapping(t, net)}
    vips = {s.vip for s in services(t) if s.network_id in nets and s.vip is not None}
    return network_addresses(t, net) | vips


def overlapping_addresses(t: Txn, net: Network) -> dict[IPAddress, str]:
    """The endpoint addresses and VIPs of the networks that overlap net, with their
    network's name: addresses a VIP of net may not take."""
    return {a: f"network {n.name}" for n in overlapping(t, net) for a in network_addresses(t, n)}


def published(t: Txn, node: str | None) -> list[PortMapping]:
    """The host ports published on ``node`` (None: on any node): the containers' there
    (-p) and the services' (--publish) that reach it, global ones reaching every node."""
    eps = [e for e in endpoints(t) if node is None or e.local_to(node)]
    svcs = services(t) if node is None else visible_services(t, node)
    return [
        *(p for e in eps for p in e.ports),
        *(p for s in svcs for p in publish_mappings(s.publish)),
    ]


def resolve(
    t: Txn,
    flag: str,
    refs: Sequence[BackendRef],
    net: Network,
    node: str,
    new_vip: Mapping[IPAddress, str] | None = None,
) -> tuple[ServiceBackend, ...]:
    """Backends as given, resolved against net's endpoints (of every node: sandbox names
    are cluster-wide); no backend may be the VIP of a service reaching the same nodes."""
    svcs = services(t) if net.scope == GLOBAL else visible_services(t, node)
    vips = {s.vip: s.name for s in svcs if s.vip is not None} | dict(new_vip or {})
    sandboxes = {e.key.removeprefix(SANDBOXES) for e in t.list(SANDBOXES)}
    return resolve_backends(flag, refs, net, endpoints(t, net.id), sandboxes, vips)


def drop_backends(t: Txn, sandbox: str, network_id: str | None = None) -> None:
    """A sandbox leaves (or leaves a network): its backends leave the services there, at
    once and with their connections (not draining)."""
    for svc in services(t, network_id):
        kept = tuple(b for b in svc.backends if b.sandbox != sandbox)
        if kept != svc.backends:
            t.put(service_key(svc.id), dataclasses.replace(svc, backends=kept).to_json())

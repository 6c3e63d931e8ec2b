"""The Container Network Model as pydp stores it: nodes, networks, endpoints, sandboxes,
services.

Value objects only (frozen dataclasses with JSON forms); the rules live in
``pydp.control.controller`` and the kernel side in ``pydp.agent``.

Several nodes (hosts) share one store. Keys:

- ``/nodes/NAME``: a `Node`, written by its agent under a lease (gone when the lease ends).
- ``/networks/ID``: a `Network`; ``scope`` "local" (bridge, host, null: it exists on
  ``node`` only, so every node has its own "bridge") or "global" (overlay: every node).
- ``/vnis/VNI``: the claim of an overlay network's VXLAN id, created in the network's own
  transaction and deleted with it: one key per VNI keeps VNIs unique across the cluster.
- ``/sandboxes/NAME``: a `Sandbox` and the ``node`` it runs on; names are unique
  cluster-wide.
- ``/endpoints/NETWORK_ID/ID``: an `Endpoint`, its ``node`` copied from its sandbox, so a
  node tells its own endpoints (to wire) from remote ones (to tunnel to) without reading
  sandboxes.
- ``/services/ID``: a `Service`, as global or local as its network.

Stores written before nodes existed hold networks, sandboxes and endpoints without
``scope`` and ``node``: they read as scope "local" and node None, and None means *the
node reading it* (`Network.visible_on`, `Sandbox.local_to`, `Endpoint.local_to`). A
single-host store thus keeps working unchanged, with nothing rewritten; it is not meant
to be shared by several nodes as it is.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netaddr import EUI, IPAddress, mac_unix_expanded

from pydp.control.ipam import Pool
from pydp.control.ports import PortMapping

__all__ = [
    "ENDPOINTS",
    "GLOBAL",
    "LOCAL",
    "MESH_SANDBOX",
    "NAT_PORTS_DEFAULT",
    "NETWORKS",
    "NODES",
    "SANDBOXES",
    "SCOPES",
    "SERVICES",
    "SETTINGS",
    "VNIS",
    "Endpoint",
    "Network",
    "Node",
    "Sandbox",
    "Service",
    "ServiceBackend",
    "ServicePort",
    "Settings",
    "endpoint_key",
    "endpoint_prefix",
    "mac_for",
    "network_key",
    "new_id",
    "node_key",
    "sandbox_key",
    "service_key",
    "vni_key",
]

NETWORKS = "/networks/"
ENDPOINTS = "/endpoints/"
SANDBOXES = "/sandboxes/"
SERVICES = "/services/"
NODES = "/nodes/"
VNIS = "/vnis/"
LOCAL = "local"  # a network on one node
GLOBAL = "global"  # a network on every node
SCOPES = (LOCAL, GLOBAL)
MESH_SANDBOX = "ingress-sbox"  # the routing mesh's endpoints (reserved: no sandbox has it)


def new_id() -> str:
    """A 64-hex identifier, as Docker's (the first 12 characters are shown)."""
    return secrets.token_hex(32)


def network_key(network_id: str) -> str:
    return f"{NETWORKS}{network_id}"


def endpoint_prefix(network_id: str) -> str:
    """Endpoints are stored under their network, so one prefix scan lists a network's."""
    return f"{ENDPOINTS}{network_id}/"


def endpoint_key(network_id: str, endpoint_id: str) -> str:
    return f"{endpoint_prefix(network_id)}{endpoint_id}"


def sandbox_key(name: str) -> str:
    return f"{SANDBOXES}{name}"


def service_key(service_id: str) -> str:
    return f"{SERVICES}{service_id}"


def node_key(name: str) -> str:
    return f"{NODES}{name}"


def vni_key(vni: int) -> str:
    return f"{VNIS}{vni}"


def _ip4(text: str) -> IPAddress:
    """An IPv4 address from its dotted text; the store wrote it, so the fast parse serves."""
    return IPAddress(int.from_bytes(socket.inet_aton(text), "big"), 4)


def _mac(text: str) -> EUI:
    return EUI(int(text.replace(":", ""), 16), dialect=mac_unix_expanded)


def mac_for(addr: IPAddress) -> EUI:
    """Docker's MAC for an IPv4 address: 02:42 and the address's four bytes."""
    return EUI((0x0242 << 32) | int(addr), dialect=mac_unix_expanded)


@dataclass(frozen=True, slots=True)
class Node:
    """A pydp host sharing the store: registered by its agent under a lease, so the key
    exists while the agent lives."""

    name: str
    address: IPAddress | None  # its underlay address: where tunnels to it go
    created: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "address": None if self.address is None else str(self.address),
                "created": self.created,
                "labels": dict(self.labels),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Node:
        d: dict[str, Any] = json.loads(text)
        addr = None if d.get("address") is None else _ip4(d["address"])
        return cls(d["name"], addr, d.get("created", 0.0), d.get("labels", {}))


@dataclass(frozen=True, slots=True)
class Network:
    """A network: its driver, addresses and options (``-o KEY=VALUE``)."""

    id: str
    name: str
    driver: str
    index: int  # the datapath's network id: unique among the networks a node sees (a
    # global network's among every network of the cluster)
    pool: Pool | None  # None for drivers without IPAM (host, null)
    options: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0
    scope: str = LOCAL  # LOCAL: on `node` only; GLOBAL: on every node
    node: str | None = None  # LOCAL: the node it is on (None: stored before nodes, the
    # reader's); GLOBAL: None
    vni: int | None = None  # overlay: the VXLAN network identifier, unique in the cluster

    def visible_on(self, node: str) -> bool:
        """Whether the network exists on ``node``: global, or local to it (or stored
        before nodes existed, and so local to whichever node reads it)."""
        return self.scope == GLOBAL or self.node is None or self.node == node

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "name": self.name,
                "driver": self.driver,
                "index": self.index,
                "pool": None if self.pool is None else self.pool.to_json(),
                "options": dict(self.options),
                "labels": dict(self.labels),
                "created": self.created,
                "scope": self.scope,
                "node": self.node,
                "vni": self.vni,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Network:
        d: dict[str, Any] = json.loads(text)
        pool = None if d["pool"] is None else Pool.from_json(d["pool"])
        return cls(
            d["id"],
            d["name"],
            d["driver"],
            d["index"],
            pool,
            d["options"],
            d["labels"],
            d["created"],
            d.get("scope", LOCAL),
            d.get("node"),
            d.get("vni"),
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A network's attachment of a sandbox: an interface with an address and a MAC."""

    id: str
    network_id: str
    sandbox: str
    ifname: str  # inside the sandbox: eth0, eth1, ...
    address: IPAddress | None
    mac: EUI | None
    created: float = 0.0
    ports: tuple[PortMapping, ...] = ()  # published ports (``-p``), host port chosen
    node: str | None = None  # its sandbox's node (None: stored before nodes, the reader's)

    def local_to(self, node: str) -> bool:
        """Whether the endpoint is on ``node`` (to wire there; elsewhere: to tunnel to)."""
        return self.node is None or self.node == node

    def to_json(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "ports": [p.to_json() for p in self.ports],
                "id": self.id,
                "network_id": self.network_id,
                "sandbox": self.sandbox,
                "ifname": self.ifname,
                "address": None if self.address is None else str(self.address),
                "mac": None if self.mac is None else str(self.mac),
                "created": self.created,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Endpoint:
        d: dict[str, Any] = json.loads(text)
        addr = None if d["address"] is None else _ip4(d["address"])
        mac = None if d["mac"] is None else _mac(d["mac"])
        ports = tuple(PortMapping.from_json(p) for p in d.get("ports", ()))
        return cls(
            d["id"],
            d["network_id"],
            d["sandbox"],
            d["ifname"],
            addr,
            mac,
            d["created"],
            ports,
            d.get("node"),
        )


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A container's network namespace (``netns`` None: it shares the host's)."""

    name: str
    id: str
    netns: str | None
    created: float = 0.0
    node: str | None = None  # the node it runs on (None: stored before nodes, the reader's)

    def local_to(self, node: str) -> bool:
        """Whether the sandbox runs on ``node``."""
        return self.node is None or self.node == node

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "id": self.id,
                "netns": self.netns,
                "created": self.created,
                "node": self.node,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Sandbox:
        d: dict[str, Any] = json.loads(text)
        return cls(d["name"], d["id"], d["netns"], d["created"], d.get("node"))


@dataclass(frozen=True, slots=True)
class ServicePort:
    """A port a service serves on its VIP (``--port 80/tcp``)."""

    port: int  # 1-65535
    proto: str = "tcp"  # "tcp" or "udp"

    def __str__(self) -> str:
        return f"{self.port}/{self.proto}"

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "proto": self.proto}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ServicePort:
        return cls(d["port"], d["proto"])


@dataclass(frozen=True, slots=True)
class ServiceBackend:
    """One backend of a service, its address resolved (a SANDBOX backend's: its endpoint's
    address on the service's network)."""

    address: IPAddress
    port: int | None  # None: the same port as the service port it serves
    weight: int = 1  # >= 0; 0 takes no new connections
    sandbox: str | None = None  # set when given as SANDBOX[:PORT]
    draining: bool = False  # removed with --drain: no new connections, live ones kept
    node: str | None = None  # a SANDBOX backend's node (its endpoint's); None for IP:PORT

    @property
    def identity(self) -> str:
        """The Maglev hash input (``pydp.control.maglev``): the same on every host."""
        return f"{self.address}" if self.port is None else f"{self.address}:{self.port}"

    @property
    def spec(self) -> str:
        """The backend as given: SANDBOX[:PORT] or IP:PORT."""
        if self.sandbox is None:
            return self.identity
        return self.sandbox if self.port is None else f"{self.sandbox}:{self.port}"

    @property
    def active(self) -> bool:
        """Whether it takes new connections: not draining, weight above 0."""
        return not self.draining and self.weight > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "port": self.port,
            "weight": self.weight,
            "sandbox": self.sandbox,
            "draining": self.draining,
            "node": self.node,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ServiceBackend:
        return cls(
            _ip4(d["address"]),
            d["port"],
            d["weight"],
            d["sandbox"],
            d["draining"],
            d.get("node"),
        )


@dataclass(frozen=True, slots=True)
class Service:
    """A service: a VIP (none in dnsrr mode) and ports in front of a set of backends."""

    id: str
    name: str
    network_id: str
    index: int  # 1..65535, the datapath's service id: unique among the services a node sees,
    # as network indexes are (reused after rm)
    vip: IPAddress | None  # None in dnsrr mode
    ports: tuple[ServicePort, ...]
    mode: str = "vip"  # "vip" or "dnsrr"
    publish: tuple[tuple[int, ServicePort], ...] = ()  # (host port, the service port it leads to)
    backends: tuple[ServiceBackend, ...] = ()
    lb: str = "maglev"  # "maglev" or "random"
    maglev_size: int | None = None  # None: maglev.default_size(number of active backends)
    created: float = 0.0

    def active_backends(self) -> tuple[ServiceBackend, ...]:
        """The backends that take new connections (not draining, weight above 0)."""
        return tuple(b for b in self.backends if b.active)

    def table_size(self) -> int:
        """Slots of the service's table: Maglev's M, or one per active backend (random)."""
        n = len(self.active_backends())
        if self.lb == "random":
            return n
        if self.maglev_size is not None:
            return self.maglev_size
        from pydp.control.maglev import default_size  # numpy: only when a table is sized

        return default_size(n)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "name": self.name,
                "network_id": self.network_id,
                "index": self.index,
                "vip": None if self.vip is None else str(self.vip),
                "ports": [p.to_json() for p in self.ports],
                "mode": self.mode,
                "publish": [[host, p.to_json()] for host, p in self.publish],
                "backends": [b.to_json() for b in self.backends],
                "lb": self.lb,
                "maglev_size": self.maglev_size,
                "created": self.created,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Service:
        d: dict[str, Any] = json.loads(text)
        return cls(
            d["id"],
            d["name"],
            d["network_id"],
            d["index"],
            None if d["vip"] is None else _ip4(d["vip"]),
            tuple(ServicePort.from_json(p) for p in d["ports"]),
            d["mode"],
            tuple((int(host), ServicePort.from_json(p)) for host, p in d["publish"]),
            tuple(ServiceBackend.from_json(b) for b in d["backends"]),
            d["lb"],
            d["maglev_size"],
            d["created"],
        )


SETTINGS = "/system/settings"
NAT_PORTS_DEFAULT = (32768, 60999)  # masquerade source ports, as Linux's ip_local_port_range


@dataclass(frozen=True, slots=True)
class Settings:
    """Host-wide settings (``pydp system config``)."""

    nat_ports: tuple[int, int] = NAT_PORTS_DEFAULT
    xdp: str = "auto"  # the uplink's XDP fast path: on, off, or auto (on unless a veth)

    def to_json(self) -> str:
        return json.dumps({"nat_ports": list(self.nat_ports), "xdp": self.xdp})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        d: dict[str, Any] = json.loads(text)
        lo, hi = d.get("nat_ports", NAT_PORTS_DEFAULT)
        return cls((int(lo), int(hi)), d.get("xdp", "auto"))

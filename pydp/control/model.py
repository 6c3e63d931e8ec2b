"""The Container Network Model as pydp stores it: networks, endpoints, sandboxes.

Value objects only (frozen dataclasses with JSON forms); the rules live in
``pydp.control.controller`` and the kernel side in ``pydp.agent``.
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
    "NAT_PORTS_DEFAULT",
    "SETTINGS",
    "Endpoint",
    "Network",
    "Sandbox",
    "Settings",
    "endpoint_key",
    "endpoint_prefix",
    "mac_for",
    "network_key",
    "new_id",
    "sandbox_key",
]

NETWORKS = "/networks/"
ENDPOINTS = "/endpoints/"
SANDBOXES = "/sandboxes/"


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


def _ip4(text: str) -> IPAddress:
    """An IPv4 address from its dotted text; the store wrote it, so the fast parse serves."""
    return IPAddress(int.from_bytes(socket.inet_aton(text), "big"), 4)


def _mac(text: str) -> EUI:
    return EUI(int(text.replace(":", ""), 16), dialect=mac_unix_expanded)


def mac_for(addr: IPAddress) -> EUI:
    """Docker's MAC for an IPv4 address: 02:42 and the address's four bytes."""
    return EUI((0x0242 << 32) | int(addr), dialect=mac_unix_expanded)


@dataclass(frozen=True, slots=True)
class Network:
    """A network: its driver, addresses and options (``-o KEY=VALUE``)."""

    id: str
    name: str
    driver: str
    index: int  # small number unique among the host's networks: the datapath's network id
    pool: Pool | None  # None for drivers without IPAM (host, null)
    options: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0

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

    def to_json(self) -> str:
        return json.dumps(
            {
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
            d["id"], d["network_id"], d["sandbox"], d["ifname"], addr, mac, d["created"], ports
        )


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A container's network namespace (``netns`` None: it shares the host's)."""

    name: str
    id: str
    netns: str | None
    created: float = 0.0

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "id": self.id, "netns": self.netns, "created": self.created},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Sandbox:
        d: dict[str, Any] = json.loads(text)
        return cls(d["name"], d["id"], d["netns"], d["created"])


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

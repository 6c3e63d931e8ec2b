"""Conntrack/NAT entries (``pydp_nat``) and published ports (``pydp_ports``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from netaddr import EUI, IPAddress, mac_unix_expanded

from pydp.maps._cdef import constants
from pydp.maps._codec import be16, ip4_bytes, mac_bytes
from pydp.maps.base import TypedMap

__all__ = [
    "CT_STATES",
    "NAT_MAP",
    "PORTS_MAP",
    "NatEntry",
    "NatKey",
    "NatMap",
    "PortKey",
    "PortMap",
    "PortTarget",
    "monotonic_ns",
]

_C = constants()
NAT_MAP = "pydp_nat"
PORTS_MAP = "pydp_ports"
PORT_F_SERVICE = _C["PORT_F_SERVICE"]
CT_STATES = {
    _C[n]: n for n in ("CT_NEW", "CT_SYN", "CT_ESTABLISHED", "CT_CLOSING", "CT_CLOSED")
}  # state number -> name
_NO_MAC = EUI(0, dialect=mac_unix_expanded)


def monotonic_ns() -> int:
    """The clock of ``NatEntry.expires`` (the kernel's bpf_ktime_get_ns)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass(frozen=True, slots=True)
class NatKey:
    """A packet's tuple as seen at egress (leaving a container) or ingress (from the uplink).

    ICMP echo: the identifier is ``sport`` for requests and ``dport`` for replies."""

    saddr: IPAddress
    daddr: IPAddress
    sport: int
    dport: int
    proto: int  # IPPROTO_*
    ingress: bool = False  # NAT_DIR_INGRESS
    scope: int = 0  # egress: the sending container's endpoint key scope (0: a bridge network)

    def __post_init__(self) -> None:
        if self.saddr.version != 4 or self.daddr.version != 4:
            raise ValueError(f"nat key addresses must be IPv4, got {self.saddr}, {self.daddr}")


@dataclass(frozen=True, slots=True)
class NatEntry:
    """What to write into a matching packet, and the connection's state."""

    address: IPAddress  # source (egress entries) or destination (ingress entries)
    port: int
    expires: int  # monotonic_ns() deadline
    state: int = 0  # CT_*
    flags: int = 0  # NAT_F_*
    ifindex: int = 0  # ingress entries: the endpoint's host-side veth
    dmac: EUI = _NO_MAC  # ingress entries: the endpoint's MAC
    smac: EUI = _NO_MAC  # ingress entries: the gateway MAC the endpoint knows

    @property
    def state_name(self) -> str:
        return CT_STATES.get(self.state, f"CT_{self.state}")


class NatMap(TypedMap[NatKey, NatEntry]):
    """``pydp_nat`` (LRU hash): NatKey -> NatEntry, two entries per NATed connection."""

    key_type = "struct nat_key"
    value_type = "struct nat_entry"

    def encode_key(self, key: NatKey) -> tuple[Any, ...]:
        k = key
        return (int(k.saddr), int(k.daddr), k.sport, k.dport, k.proto, int(k.ingress), k.scope)

    def decode_key(self, fields: tuple[Any, ...]) -> NatKey:
        s, d, sp, dp, proto, direction, scope = fields
        return NatKey(IPAddress(s, 4), IPAddress(d, 4), sp, dp, proto, bool(direction), scope)

    def encode_value(self, value: NatEntry) -> tuple[Any, ...]:
        return (
            value.expires,
            int(value.address),
            value.port,
            value.state,
            value.flags,
            value.ifindex,
            mac_bytes(value.dmac),
            mac_bytes(value.smac),
        )

    def decode_value(self, fields: tuple[Any, ...]) -> NatEntry:
        exp, addr, port, state, flags, ifindex, dmac, smac = fields
        return NatEntry(
            IPAddress(addr, 4),
            port,
            exp,
            state,
            flags,
            ifindex,
            EUI(dmac.hex(), dialect=mac_unix_expanded),
            EUI(smac.hex(), dialect=mac_unix_expanded),
        )


@dataclass(frozen=True, slots=True)
class PortKey:
    """A published host port; address None publishes on the uplink's address."""

    proto: int  # IPPROTO_TCP or IPPROTO_UDP
    port: int
    address: IPAddress | None = None


@dataclass(frozen=True, slots=True)
class PortTarget:
    """The endpoint address and port a published port leads to; for a published service
    port (``service``), the service's frontend (VIP, service port)."""

    address: IPAddress
    port: int
    service: bool = False
    scope: int = 0  # the endpoint's key scope (its overlay network's index; 0: host-unique)


class PortMap(TypedMap[PortKey, PortTarget]):
    """``pydp_ports``: PortKey -> PortTarget, one entry per published port.

    A range is one entry per port (a later layout may add range entries)."""

    key_type = "struct port_key"
    value_type = "struct port_target"

    def encode_key(self, key: PortKey) -> tuple[Any, ...]:
        return (0 if key.address is None else int(key.address), key.port, key.proto)

    def key_bytes(self, key: PortKey) -> bytes:
        addr = b"\0" * 4 if key.address is None else ip4_bytes(key.address)
        return self.key_layout.pack_raw(addr, be16(key.port), key.proto)

    def decode_key(self, fields: tuple[Any, ...]) -> PortKey:
        addr, port, proto = fields
        return PortKey(proto, port, IPAddress(addr, 4) if addr else None)

    def encode_value(self, value: PortTarget) -> tuple[Any, ...]:
        flags = PORT_F_SERVICE if value.service else 0
        return (int(value.address), value.port, flags, value.scope)

    def decode_value(self, fields: tuple[Any, ...]) -> PortTarget:
        addr, port, flags, scope = fields
        return PortTarget(IPAddress(addr, 4), port, bool(flags & PORT_F_SERVICE), scope)

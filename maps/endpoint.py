"""The endpoint map: a local container's IPv4 address -> its veth and MAC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netaddr import EUI, IPAddress, mac_unix_expanded

from pydp.maps._codec import ip4_bytes, mac_bytes
from pydp.maps.base import ArrayMap, TypedMap

__all__ = [
    "ENDPOINT_MAP",
    "IFACE_MAP",
    "Endpoint",
    "EndpointKey",
    "EndpointMap",
    "Iface",
    "IfaceMap",
    "Scoped",
    "address_of",
]

ENDPOINT_MAP = "pydp_endpoints"


@dataclass(frozen=True, slots=True, order=True)
class Scoped:
    """The key of an endpoint on an overlay network: its address within its network
    (``scope``: the network's index), as overlay subnets may overlap, even on one host."""

    address: IPAddress
    scope: int


EndpointKey = IPAddress | Scoped  # an address alone: scope 0, unique on the host


def address_of(key: EndpointKey) -> IPAddress:
    return key.address if isinstance(key, Scoped) else key


def _split(key: EndpointKey) -> tuple[IPAddress, int]:
    addr, scope = (key.address, key.scope) if isinstance(key, Scoped) else (key, 0)
    if addr.version != 4:
        raise ValueError(f"endpoint: expected an IPv4 address, got {addr}")
    return addr, scope


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a local endpoint's traffic is delivered."""

    ifindex: int  # host-side veth; traffic is delivered to its peer
    mac: EUI  # the container interface's MAC
    network: int = 0  # the network's index: endpoints of different networks are isolated
    flags: int = 0  # ENDPOINT_F_*
    node: IPAddress | None = None  # ENDPOINT_F_REMOTE: the underlay address of its node


class EndpointMap(TypedMap[EndpointKey, Endpoint]):
    """``pydp_endpoints``: IPv4 address (``Scoped`` on an overlay network) -> Endpoint."""

    key_type = "struct endpoint_key"
    value_type = "struct endpoint_info"

    def encode_key(self, key: EndpointKey) -> tuple[Any, ...]:
        addr, scope = _split(key)
        return (int(addr), scope)

    def key_bytes(self, key: EndpointKey) -> bytes:
        addr, scope = _split(key)
        return self.key_layout.pack_raw(ip4_bytes(addr), scope)

    def value_bytes(self, value: Endpoint) -> bytes:
        return self.value_layout.pack_raw(
            value.ifindex, value.network, mac_bytes(value.mac), value.flags, _node(value)
        )

    def pack_keys(self, keys: Sequence[EndpointKey]) -> bytes:
        return b"".join(self.key_bytes(k) for k in keys)

    def pack_values(self, values: Sequence[Endpoint]) -> bytes:
        pack = self.value_layout.struct.pack
        return b"".join(
            [pack(v.ifindex, v.network, mac_bytes(v.mac), v.flags, _node(v)) for v in values]
        )

    def decode_key(self, fields: tuple[Any, ...]) -> EndpointKey:
        addr, scope = fields
        return Scoped(IPAddress(addr, 4), scope) if scope else IPAddress(addr, 4)

    def encode_value(self, value: Endpoint) -> tuple[Any, ...]:
        node = 0 if value.node is None else int(value.node)
        return (value.ifindex, value.network, mac_bytes(value.mac), value.flags, node)

    def decode_value(self, fields: tuple[Any, ...]) -> Endpoint:
        ifindex, network, mac, flags, node = fields
        mac_ = EUI(mac.hex(), dialect=mac_unix_expanded)
        return Endpoint(ifindex, mac_, network, flags, IPAddress(node, 4) if node else None)


def _node(value: Endpoint) -> bytes:
    return b"\0\0\0\0" if value.node is None else ip4_bytes(value.node)


IFACE_MAP = "pydp_ifaces"


@dataclass(frozen=True, slots=True)
class Iface:
    """The endpoint behind a host-side interface (``pydp_ifaces``, indexed by ifindex)."""

    address: IPAddress | None  # None: no endpoint behind this interface
    network: int = 0
    flags: int = 0  # IFACE_F_*: IFACE_F_LB_BACKEND when the endpoint backs a service


class IfaceMap(ArrayMap[int, Iface]):
    """``pydp_ifaces``: host ifindex -> Iface. An array: "deleting" writes an empty entry."""

    key_type = "uint32_t"
    value_type = "struct iface_info"
    EMPTY = Iface(None, 0)

    def encode_key(self, key: int) -> tuple[Any, ...]:
        return (key,)

    def decode_key(self, fields: tuple[Any, ...]) -> int:
        return int(fields[0])

    def encode_value(self, value: Iface) -> tuple[Any, ...]:
        return (0 if value.address is None else int(value.address), value.network, value.flags)

    def decode_value(self, fields: tuple[Any, ...]) -> Iface:
        addr, network, flags = fields
        return Iface(IPAddress(addr, 4) if addr else None, network, flags)

    def value_bytes(self, value: Iface) -> bytes:
        addr = b"\0\0\0\0" if value.address is None else ip4_bytes(value.address)
        return self.value_layout.pack_raw(addr, value.network, value.flags)

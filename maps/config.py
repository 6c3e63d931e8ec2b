"""Run-time settings of the datapath: the host (uplink, NAT range), networks, subnets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netaddr import EUI, IPAddress, IPNetwork, mac_unix_expanded

from pydp.maps._cdef import constants
from pydp.maps._codec import ip4_bytes, mac_bytes
from pydp.maps.base import ArrayMap, TypedMap

__all__ = [
    "CONFIG_MAP",
    "NETWORKS_MAP",
    "SUBNETS_MAP",
    "VNIS_MAP",
    "ConfigMap",
    "HostConfig",
    "NetworkInfo",
    "NetworkMap",
    "SubnetInfo",
    "SubnetMap",
    "VniMap",
]

_C = constants()
CONFIG_MAP = "pydp_config"
NETWORKS_MAP = "pydp_networks"
SUBNETS_MAP = "pydp_subnets"
VNIS_MAP = "pydp_vnis"
_NO_MAC = EUI(0, dialect=mac_unix_expanded)


def _eui(raw: bytes) -> EUI:
    return EUI(raw.hex(), dialect=mac_unix_expanded)


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The host's NAT settings; no uplink (ifindex 0) turns masquerade and published ports off."""

    uplink_ifindex: int = 0
    uplink_address: IPAddress | None = None
    port_min: int = _C["NAT_PORT_MIN_DEFAULT"]  # masquerade port range, inclusive
    port_max: int = _C["NAT_PORT_MAX_DEFAULT"]
    flags: int = 0
    vxlan_ifindex: int = 0  # the host's VXLAN device (overlay networks); 0: none


class ConfigMap(TypedMap[int, HostConfig]):
    """``pydp_config``: an array of one HostConfig at key 0 (``config.host``)."""

    key_type = "uint32_t"
    value_type = "struct host_config"

    def encode_key(self, key: int) -> tuple[Any, ...]:
        return (key,)

    def decode_key(self, fields: tuple[Any, ...]) -> int:
        return int(fields[0])

    def encode_value(self, value: HostConfig) -> tuple[Any, ...]:
        addr = 0 if value.uplink_address is None else int(value.uplink_address)
        return (
            value.uplink_ifindex,
            addr,
            value.port_min,
            value.port_max,
            value.flags,
            value.vxlan_ifindex,
        )

    def decode_value(self, fields: tuple[Any, ...]) -> HostConfig:
        ifindex, addr, lo, hi, flags, vxlan = fields
        return HostConfig(ifindex, IPAddress(addr, 4) if addr else None, lo, hi, flags, vxlan)

    def value_bytes(self, value: HostConfig) -> bytes:
        if not 0 < value.port_min <= value.port_max <= 0xFFFF:
            raise ValueError(
                f"nat port range: expected 1 <= min <= max <= 65535, got "
                f"{value.port_min}-{value.port_max}"
            )
        addr = b"\0" * 4 if value.uplink_address is None else ip4_bytes(value.uplink_address)
        return self.value_layout.pack_raw(
            value.uplink_ifindex,
            addr,
            value.port_min,
            value.port_max,
            value.flags,
            value.vxlan_ifindex,
        )

    @property
    def host(self) -> HostConfig:
        """The one entry."""
        return self[_C["PYDP_CONFIG_KEY"]]

    @host.setter
    def host(self, value: HostConfig) -> None:
        self[_C["PYDP_CONFIG_KEY"]] = value


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """A network's datapath settings (``pydp_networks``, indexed by network index)."""

    masquerade: bool = False  # enable_ip_masquerade
    gateway_mac: EUI = _NO_MAC  # source MAC of frames delivered to its endpoints after DNAT
    vni: int = 0  # overlay networks: the VXLAN network identifier; 0: a local network
    mesh: IPAddress | None = None  # overlay networks: this node's mesh address on it


class NetworkMap(ArrayMap[int, NetworkInfo]):
    """``pydp_networks``: network index -> NetworkInfo. An array: deleting writes defaults."""

    key_type = "uint32_t"
    value_type = "struct network_info"
    EMPTY = NetworkInfo()

    def encode_key(self, key: int) -> tuple[Any, ...]:
        return (key,)

    def decode_key(self, fields: tuple[Any, ...]) -> int:
        return int(fields[0])

    def encode_value(self, value: NetworkInfo) -> tuple[Any, ...]:
        flags = _C["NETWORK_F_MASQUERADE"] if value.masquerade else 0
        mesh = 0 if value.mesh is None else int(value.mesh)
        return (flags, mac_bytes(value.gateway_mac), value.vni, mesh)

    def decode_value(self, fields: tuple[Any, ...]) -> NetworkInfo:
        flags, mac, vni, mesh = fields
        masq = bool(flags & _C["NETWORK_F_MASQUERADE"])
        return NetworkInfo(masq, _eui(mac), vni, IPAddress(mesh, 4) if mesh else None)


@dataclass(frozen=True, slots=True)
class SubnetInfo:
    """A ``pydp_subnets`` value: the owning network and its gateway address (the hairpin
    SNAT source; None: the datapath asks the FIB for the host's address toward the subnet)."""

    network: int
    gateway: IPAddress | None = None


class VniMap(TypedMap[int, int]):
    """``pydp_vnis``: an overlay network's VNI -> its network index (the scope from_overlay
    looks the frame's destination up in)."""

    key_type = "uint32_t"
    value_type = "uint32_t"

    def encode_key(self, key: int) -> tuple[Any, ...]:
        return (key,)

    def decode_key(self, fields: tuple[Any, ...]) -> int:
        return int(fields[0])

    def encode_value(self, value: int) -> tuple[Any, ...]:
        return (value,)

    def decode_value(self, fields: tuple[Any, ...]) -> int:
        return int(fields[0])


class SubnetMap(TypedMap[IPNetwork, "int | SubnetInfo"]):
    """``pydp_subnets`` (LPM trie): a pydp network's IPv4 subnet -> its network index, or a
    SubnetInfo with its gateway too. Reads give SubnetInfo."""

    key_type = "struct subnet_key"
    value_type = "struct subnet_info"

    def encode_key(self, key: IPNetwork) -> tuple[Any, ...]:
        if key.version != 4:
            raise ValueError(f"subnet must be IPv4, got {key}")
        return (key.prefixlen, int(key.network))

    def key_bytes(self, key: IPNetwork) -> bytes:
        if key.version != 4:
            raise ValueError(f"subnet must be IPv4, got {key}")
        return self.key_layout.pack_raw(key.prefixlen, ip4_bytes(key.network))

    def decode_key(self, fields: tuple[Any, ...]) -> IPNetwork:
        prefixlen, addr = fields
        return IPNetwork(f"{IPAddress(addr, 4)}/{prefixlen}")

    def encode_value(self, value: int | SubnetInfo) -> tuple[Any, ...]:
        if isinstance(value, SubnetInfo):
            gw = 0 if value.gateway is None else int(value.gateway)
            return (value.network, gw)
        return (value, 0)

    def value_bytes(self, value: int | SubnetInfo) -> bytes:
        info = value if isinstance(value, SubnetInfo) else SubnetInfo(value)
        if info.gateway is not None and info.gateway.version != 4:
            raise ValueError(f"subnet gateway must be IPv4, got {info.gateway}")
        gw = b"\0" * 4 if info.gateway is None else ip4_bytes(info.gateway)
        return self.value_layout.pack_raw(info.network, gw)

    def decode_value(self, fields: tuple[Any, ...]) -> SubnetInfo:
        network, gw = fields
        return SubnetInfo(int(network), IPAddress(gw, 4) if gw else None)

"""Network drivers as the control layer sees them: options, IPAM, interface naming.

A driver here is pure policy; what it builds in the kernel lives in
``pydp.agent`` (one kernel driver per name). Each says: options to validate, whether
IPAM applies, whether endpoints get an interface, its scope (a network on one node, or
on every node) and how networks of the driver may coexist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from pydp.control.model import GLOBAL, LOCAL, Network
from pydp.errors import ConfigError, ConflictError

__all__ = [
    "BRIDGE_MTU",
    "BRIDGE_NAME",
    "DEFAULT_BRIDGE",
    "DRIVERS",
    "DRIVER_MTU",
    "ENABLE_MASQUERADE",
    "OVERLAY_HEADROOM",
    "PARENT",
    "VNI_FIRST",
    "VNI_MAX",
    "VXLANID_LIST",
    "BridgeDriver",
    "Driver",
    "HostDriver",
    "NullDriver",
    "OverlayDriver",
    "driver_for",
    "overlay_mtu",
    "parse_vni",
]

BRIDGE_NAME = "com.docker.network.bridge.name"
DRIVER_MTU = "com.docker.network.driver.mtu"  # every driver's endpoint MTU
BRIDGE_MTU = DRIVER_MTU
ENABLE_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
PARENT = "parent"  # an underlay interface enslaved to the bridge (no NAT)
DEFAULT_BRIDGE = "pydp0"  # the bridge of the default network "bridge"
VXLANID_LIST = "com.docker.network.driver.overlay.vxlanid_list"  # an overlay's VNI, as Docker's
VNI_FIRST = 4096  # VNIs chosen for overlay networks start here, as Docker's
VNI_MAX = 0xFF_FFFF  # 24 bits (RFC 7348)
OVERLAY_HEADROOM = 50  # VXLAN over IPv4: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8


def _ifname(key: str, value: str) -> str:
    if not 1 <= len(value) <= 15 or any(c in "/: " for c in value):
        raise ConfigError(f'-o {key}: expected an interface name of 1-15 characters, got "{value}"')
    return value


def _mtu(key: str, value: str) -> str:
    if not value.isdigit() or not 68 <= int(value) <= 65535:
        raise ConfigError(f'-o {key}: expected an MTU from 68 to 65535, got "{value}"')
    return str(int(value))


def _bool(key: str, value: str) -> str:
    if value.lower() not in ("true", "false"):
        raise ConfigError(f'-o {key}: expected true or false, got "{value}"')
    return value.lower()


def parse_vni(key: str, value: str) -> str:
    """``-o com.docker.network.driver.overlay.vxlanid_list=VNI``: one VNI, 1-16777215."""
    if not value.isdigit() or not 1 <= int(value) <= VNI_MAX:
        raise ConfigError(f'-o {key}: expected one VNI from 1 to {VNI_MAX}, got "{value}"')
    return str(int(value))


class Driver:
    """What every driver says about its networks."""

    name: ClassVar[str] = ""
    uses_ipam: ClassVar[bool] = True  # endpoints get addresses from the network's pool
    has_interfaces: ClassVar[bool] = True  # endpoints get an interface in their sandbox
    singleton: ClassVar[bool] = False  # at most one network of this driver (host, null)
    scope: ClassVar[str] = LOCAL  # LOCAL: a network exists on one node; GLOBAL: on every one
    options: ClassVar[Mapping[str, Callable[[str, str], str]]] = {}

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """Known ``-o`` keys with checked values; an unknown key is refused by name."""
        out = {}
        for key, value in options.items():
            check = self.options.get(key)
            if check is None:
                known = ", ".join(sorted(self.options)) or "none"
                raise ConfigError(
                    f"-o {key}: not an option of the {self.name} driver (known: {known})"
                )
            out[key] = check(key, value)
        return out

    def check_coexistence(self, network: Network, others: Sequence[Network]) -> None:
        """Refuse a network that would clash with existing ones of this driver."""
        if self.singleton and any(o.driver == self.name for o in others):
            raise ConflictError(f"network {network.name}: only one {self.name} network is allowed")


class BridgeDriver(Driver):
    """A Linux bridge per network; a veth per endpoint; from_container on each."""

    name = "bridge"
    options: ClassVar[Mapping[str, Callable[[str, str], str]]] = {
        BRIDGE_NAME: _ifname,
        BRIDGE_MTU: _mtu,
        ENABLE_MASQUERADE: _bool,
        PARENT: _ifname,
    }

    @staticmethod
    def bridge_name(network: Network) -> str:
        """``-o com.docker.network.bridge.name``, pydp0 for "bridge", else br-<id[:12]>."""
        if BRIDGE_NAME in network.options:
            return network.options[BRIDGE_NAME]
        return DEFAULT_BRIDGE if network.name == "bridge" else f"br-{network.id[:12]}"

    @staticmethod
    def mtu(network: Network) -> int | None:
        value = network.options.get(BRIDGE_MTU)
        return None if value is None else int(value)

    def check_coexistence(self, network: Network, others: Sequence[Network]) -> None:
        name = self.bridge_name(network)
        for o in others:
            if o.driver == self.name and self.bridge_name(o) == name:
                raise ConflictError(f"-o {BRIDGE_NAME}: bridge {name} is used by network {o.name}")
        parent = network.options.get(PARENT)
        for o in others:
            if parent is not None and o.options.get(PARENT) == parent:
                raise ConflictError(f"-o {PARENT}: {parent} is enslaved to network {o.name}")


class HostDriver(Driver):
    """The host's own namespace: no interfaces, no addresses."""

    name = "host"
    uses_ipam = False
    has_interfaces = False
    singleton = True


class NullDriver(Driver):
    """A namespace with loopback only."""

    name = "null"
    uses_ipam = False
    has_interfaces = False
    singleton = True


class OverlayDriver(Driver):
    """A network on every node: a veth per endpoint, and between nodes VXLAN with the
    network's VNI through one flow-based VXLAN device per node."""

    name = "overlay"
    scope = GLOBAL
    options: ClassVar[Mapping[str, Callable[[str, str], str]]] = {
        DRIVER_MTU: _mtu,
        VXLANID_LIST: parse_vni,
    }

    @staticmethod
    def requested_vni(network_options: Mapping[str, str]) -> int | None:
        """The VNI given with ``-o ...vxlanid_list`` (validated), or None: choose one."""
        value = network_options.get(VXLANID_LIST)
        return None if value is None else int(value)


def overlay_mtu(network: Network, uplink_mtu: int) -> int:
    """An overlay endpoint's MTU: ``-o com.docker.network.driver.mtu`` if given, else the
    uplink's MTU less the VXLAN headers (50 bytes)."""
    value = network.options.get(DRIVER_MTU)
    return int(value) if value is not None else uplink_mtu - OVERLAY_HEADROOM


DRIVERS: Mapping[str, Driver] = {
    d.name: d for d in (BridgeDriver(), HostDriver(), NullDriver(), OverlayDriver())
}


def driver_for(name: str) -> Driver:
    """The driver called name; ConfigError naming -d and the choices otherwise."""
    try:
        return DRIVERS[name]
    except KeyError:
        raise ConfigError(
            f'-d/--driver: unknown driver "{name}" (known: {", ".join(sorted(DRIVERS))})'
        ) from None

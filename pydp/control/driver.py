"""Network drivers as the control layer sees them: options, IPAM, interface naming.

A driver here is pure policy; what it builds in the kernel lives in
``pydp.agent`` (one kernel driver per name). ``overlay`` and ``macvlan`` fit the
same shape: options to validate, whether IPAM applies, whether endpoints get
an interface, and how networks of the driver may coexist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from pydp.control.model import Network
from pydp.errors import ConfigError, ConflictError

__all__ = [
    "BRIDGE_MTU",
    "BRIDGE_NAME",
    "DEFAULT_BRIDGE",
    "DRIVERS",
    "ENABLE_MASQUERADE",
    "PARENT",
    "BridgeDriver",
    "Driver",
    "HostDriver",
    "NullDriver",
    "driver_for",
]

BRIDGE_NAME = "com.docker.network.bridge.name"
BRIDGE_MTU = "com.docker.network.driver.mtu"
ENABLE_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
PARENT = "parent"  # an underlay interface enslaved to the bridge (no NAT)
DEFAULT_BRIDGE = "pydp0"  # the bridge of the default network "bridge"


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


class Driver:
    """What every driver says about its networks."""

    name: ClassVar[str] = ""
    uses_ipam: ClassVar[bool] = True  # endpoints get addresses from the network's pool
    has_interfaces: ClassVar[bool] = True  # endpoints get an interface in their sandbox
    singleton: ClassVar[bool] = False  # at most one network of this driver (host, null)
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


DRIVERS: Mapping[str, Driver] = {d.name: d for d in (BridgeDriver(), HostDriver(), NullDriver())}


def driver_for(name: str) -> Driver:
    """The driver called name; ConfigError naming -d and the choices otherwise."""
    try:
        return DRIVERS[name]
    except KeyError:
        raise ConfigError(
            f'-d/--driver: unknown driver "{name}" (known: {", ".join(sorted(DRIVERS))})'
        ) from None

"""The uplink: the host's interface towards the rest of the network.

Masquerade leaves through it and published ports are reached on its address. It
is the interface holding the default route unless ``--uplink IFACE`` or
``$PYDP_UPLINK`` names another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from netaddr import EUI, IPAddress, IPNetwork

from pydp.errors import ConfigError, NotFoundError
from pydp.net import NetHost

__all__ = ["UPLINK_ENV", "Uplink", "find_uplink"]

UPLINK_ENV = "PYDP_UPLINK"


@dataclass(frozen=True, slots=True)
class Uplink:
    """The uplink as the datapath needs it."""

    name: str
    ifindex: int
    mac: EUI | None
    address: IPNetwork  # its first IPv4 address, with the prefix length
    gateway: IPAddress | None  # the default route's next hop through it, if any


def find_uplink(host: NetHost, name: str | None = None) -> Uplink:
    """The named interface (``name``, else ``$PYDP_UPLINK``), or the one holding the
    default route; NotFoundError with what to do when there is none."""
    name = name or os.environ.get(UPLINK_ENV) or None
    defaults = sorted(
        (r for r in host.routes(4) if r.dst.prefixlen == 0 and r.ifindex),
        key=lambda r: r.metric,
    )
    by_index = {link.ifindex: link for link in host.links()}
    if name is None:
        if not defaults:
            raise NotFoundError(
                "uplink: no interface holds a default route; name one with --uplink IFACE"
                f" or ${UPLINK_ENV}"
            )
        link = by_index[defaults[0].ifindex]  # type: ignore[index]
    else:
        found = host.link(name)
        if found is None:
            raise NotFoundError(f"--uplink: no interface {name} on this host")
        link = found
    addrs = [a for a in host.addresses(link.name) if a.version == 4]
    if not addrs:
        raise ConfigError(f"uplink {link.name}: it has no IPv4 address")
    gateway = next((r.gateway for r in defaults if r.ifindex == link.ifindex), None)
    return Uplink(link.name, link.ifindex, link.mac, addrs[0], gateway)

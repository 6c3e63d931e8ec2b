"""Links and routes as pydp sees them, and who owns a link.

pydp marks every link it creates with an interface alias (``IFLA_IFALIAS``)
``pydp:<owner>``: ``pydp:net/3f2a9c`` for a network's bridge,
``pydp:ep/<endpoint id>`` for both ends of an endpoint's veth. A link
without such an alias is not pydp's, and pydp never changes or deletes it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import netaddr

from pydp.errors import ConfigError, ConflictError

__all__ = [
    "IFALIASZ_MAX",
    "IFF_UP",
    "IFNAMSIZ_MAX",
    "OWNER_PREFIX",
    "Link",
    "Route",
    "check_owner",
    "claim",
    "mac_from_bytes",
    "random_mac",
    "veth_name",
]

OWNER_PREFIX = "pydp:"
IFNAMSIZ_MAX = 15  # IFNAMSIZ minus the NUL
IFALIASZ_MAX = 255  # IFALIASZ minus the NUL
IFF_UP = 0x1
VETH_PREFIX = "pd"

_HEX_RE = re.compile(r"[0-9a-f]{11,}")
_VETH_HEX = IFNAMSIZ_MAX - len(VETH_PREFIX) - 2  # 11: room for a 2-character suffix


@dataclass(frozen=True, slots=True)
class Link:
    """One network interface of one namespace, as the kernel reported it.

    ``mac`` is None for links without a 48-bit hardware address (tunnels);
    ``master`` is the ifindex of the bridge it is enslaved to; for a veth,
    ``peer_ifindex`` is the peer's ifindex in the peer's namespace, and
    ``peer_netnsid`` the id under which this namespace knows the peer's
    namespace (None when both ends are in the same namespace).
    """

    name: str
    ifindex: int
    kind: str | None
    mac: netaddr.EUI | None
    mtu: int
    alias: str | None
    master: int | None
    up: bool
    peer_ifindex: int | None = None
    peer_netnsid: int | None = None
    group: int = 0  # IFLA_GROUP: pydp marks a fully configured endpoint veth with it

    @property
    def owner(self) -> str | None:
        """The ``pydp:...`` alias if pydp owns this link, else None."""
        if self.alias is not None and self.alias.startswith(OWNER_PREFIX):
            return self.alias
        return None

    def describe(self) -> str:
        """``brnet (ifindex 5)``: the identity used in logs and messages."""
        return f"{self.name} (ifindex {self.ifindex})"


@dataclass(frozen=True, slots=True)
class Route:
    """One route of a table: ``gateway`` and ``ifindex`` may be absent."""

    dst: netaddr.IPNetwork
    gateway: netaddr.IPAddress | None
    ifindex: int | None
    metric: int


def mac_from_bytes(value: bytes | None) -> netaddr.EUI | None:
    """The MAC address in a 6-byte ``IFLA_ADDRESS``, or None for other lengths."""
    if value is None or len(value) != 6:
        return None
    return netaddr.EUI(int.from_bytes(value, "big"), dialect=netaddr.mac_unix_expanded)


def check_owner(owner: str) -> str:
    """Return ``owner`` if it is a valid ownership alias ``pydp:<something>``."""
    if not owner.startswith(OWNER_PREFIX) or len(owner) == len(OWNER_PREFIX):
        raise ConfigError(f"owner: expected {OWNER_PREFIX}<kind>/<id>, got {owner!r}")
    if len(owner.encode()) > IFALIASZ_MAX:
        raise ConfigError(f"owner: expected at most {IFALIASZ_MAX} bytes, got {owner!r}")
    return owner


def claim(link: Link, owner: str, kind: str, exact: bool = True) -> None:
    """Raise `ConflictError` unless ``link`` belongs to ``owner``.

    The alias must equal ``owner``, or start with it when ``exact`` is
    false. ``kind`` says what the caller wants the name for (``bridge``),
    for the message.
    """
    if link.owner is None:
        alias = "none" if link.alias is None else repr(link.alias)
        raise ConflictError(
            f"link {link.describe()} exists and is not pydp's (alias {alias}): "
            f"choose another {kind} name, or remove that link"
        )
    if link.owner != owner if exact else not link.owner.startswith(owner):
        raise ConflictError(
            f"link {link.describe()} belongs to {link.owner}, not {owner}: "
            f"choose another {kind} name"
        )


def veth_name(endpoint_id: str) -> str:
    """The host-side veth name of an endpoint: ``pd`` and 11 hex digits.

    A lower-case hex id (Docker's) gives its own first 11 digits, so names
    are easy to match by eye; any other id is hashed (SHA-256).
    """
    if not endpoint_id:
        raise ConfigError("endpoint id: expected a non-empty string, got ''")
    digits = endpoint_id if _HEX_RE.fullmatch(endpoint_id) else _sha(endpoint_id)
    return VETH_PREFIX + digits[:_VETH_HEX]


def random_mac() -> netaddr.EUI:
    """A random unicast, locally administered MAC address (``x2:...``, ``x6:...``)."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return netaddr.EUI(int.from_bytes(octets, "big"), dialect=netaddr.mac_unix_expanded)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()

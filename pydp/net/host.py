"""The links, addresses and routes of one network namespace, idempotently.

`NetHost()` acts on the calling thread's namespace (pydp's "host");
`NetHost("sb1")` on the named namespace ``/run/netns/sb1`` (a sandbox).
Every ``ensure_*`` converges to the state asked for and changes nothing
when it is there already; every delete of something already gone succeeds;
links are created with an owner alias (``pydp:...``) and links that are
not pydp's are never changed or deleted.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import Any

import netaddr

from pydp.errors import ConfigError, NotFoundError, PydpError
from pydp.net._netlink import Socket
from pydp.net._veth import VethSpec, ensure_veth, mac_text
from pydp.net.links import (
    IFNAMSIZ_MAX,
    OWNER_PREFIX,
    Link,
    Route,
    check_owner,
    claim,
    random_mac,
)

__all__ = ["NetHost", "check_ifname"]

log = logging.getLogger(__name__)

RT_TABLE_MAIN = 254
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def check_ifname(what: str, name: str) -> str:
    """Return ``name`` if the kernel accepts it as an interface name."""
    bad = not name or len(name.encode()) > IFNAMSIZ_MAX or name in (".", "..")
    if bad or any(c in "/:" or c.isspace() for c in name):
        raise ConfigError(f"{what}: expected an interface name of 1-15 characters, got {name!r}")
    return name


def _mtu(mtu: int | None) -> dict[str, Any]:
    if mtu is None:
        return {}
    if not 68 <= mtu <= 65535:
        raise ConfigError(f"mtu: expected 68-65535, got {mtu}")
    return {"mtu": mtu}


class NetHost:
    """Links, addresses and routes of the current network namespace, or of ``netns``.

    Holds one netlink socket; close it (or use ``with``). Use it from the
    thread that made it. For a named namespace the socket is opened inside
    it, so nothing else moves there.
    """

    def __init__(self, netns: str | None = None) -> None:
        self._sock = Socket(netns)

    def __repr__(self) -> str:
        return f"<NetHost {self.netns or 'current netns'}>"

    def __enter__(self) -> NetHost:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def netns(self) -> str | None:
        """The named namespace this acts on, or None for the caller's current one."""
        return self._sock.netns

    def close(self) -> None:
        """Close the netlink socket; idempotent."""
        self._sock.close()

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        return self._sock.call(operation, *args, **kwargs)

    def _id(self, link: Link) -> str:
        return link.describe() + self._sock.where

    # Links ---------------------------------------------------------------

    def links(self) -> list[Link]:
        """Every link of the namespace, by ifindex."""
        return self._sock.read("list links", self._sock.reader.links)

    def link(self, name: str) -> Link | None:
        """The link called ``name``, or None if there is none."""
        check_ifname("link", name)
        return self._sock.read(f"show link {name}", self._sock.reader.link, name)

    def require(self, name: str, operation: str) -> Link:
        """The link called ``name``; `NotFoundError` naming ``operation`` if absent."""
        link = self.link(name)
        if link is None:
            raise NotFoundError(f"{operation}{self._sock.where}: no link {name}")
        return link

    def owned_links(self, prefix: str = OWNER_PREFIX) -> list[Link]:
        """The links whose alias starts with ``prefix`` (default: every link pydp owns)."""
        return [link for link in self.links() if (link.owner or "").startswith(prefix)]

    def set_link(self, link: Link, **attrs: Any) -> None:
        """Apply ``attrs`` (pyroute2 ``link set`` names) to ``link``, logging what changed."""
        words = ", ".join(f"{key} {value}" for key, value in attrs.items())
        self._call(f"set {words} on {self._id(link)}", "link", "set", index=link.ifindex, **attrs)
        log.info("set %s on %s", words, self._id(link))

    def adjust(
        self,
        link: Link,
        mtu: int | None = None,
        master: Link | None = None,
        mac: netaddr.EUI | None = None,
    ) -> Link:
        """Bring ``link`` up, set ``mtu``, ``master`` and ``mac`` where they differ.

        Returns the link as it is afterwards.
        """
        changes: dict[str, Any] = {}
        if mtu is not None and link.mtu != mtu:
            changes["mtu"] = mtu
        if mac is not None and link.mac != mac:
            changes["address"] = mac_text(mac)
        if master is not None and link.master != master.ifindex:
            changes["master"] = master.ifindex
        if not link.up:
            changes["state"] = "up"
        if not changes:
            return link
        self.set_link(link, **changes)
        return self.require(link.name, f"show link {link.name}")

    def set_group(self, link: Link, group: int) -> None:
        """Put pydp's link in device group ``group`` (IFLA_GROUP) unless it is there."""
        claim(link, OWNER_PREFIX, "link", exact=False)
        if link.group != group:
            self.set_link(link, group=group)

    def set_up(self, name: str) -> None:
        """Bring ``name`` up (``lo`` too: no ownership check, nothing is lost)."""
        link = self.require(name, f"set {name} up")
        if not link.up:
            self.set_link(link, state="up")

    def set_master(self, name: str, bridge: str | None) -> None:
        """Enslave pydp's link ``name`` to ``bridge``, or free it when ``bridge`` is None."""
        operation = f"set master of {name}"
        link = self.require(name, operation)
        claim(link, OWNER_PREFIX, "link", exact=False)
        index = 0 if bridge is None else self.require(bridge, operation).ifindex
        if (link.master or 0) != index:
            self.set_link(link, master=index)

    def delete_link(self, name: str, owner_prefix: str = OWNER_PREFIX) -> None:
        """Delete ``name`` if its alias starts with ``owner_prefix``; absent is success.

        A link that exists and is not pydp's (or not this owner's) raises
        `ConflictError` and is left alone.
        """
        link = self.link(name)
        if link is None:
            return
        claim(link, owner_prefix, "link", exact=False)
        self._delete(link)

    def _delete(self, link: Link) -> None:
        try:
            self._call(f"delete link {self._id(link)}", "link", "del", index=link.ifindex)
        except NotFoundError:
            return
        log.info("delete link %s (owner %s)", self._id(link), link.alias)

    def ensure_bridge(self, name: str, owner: str, mtu: int | None = None) -> Link:
        """Make the bridge ``name`` exist, owned by ``owner``, up, with ``mtu`` if given.

        Its MAC address is set (random, locally administered) so that it does
        not follow its ports'. Multicast snooping is off. A link of that
        name that is not ``owner``'s raises `ConflictError`; one that is but
        is not a bridge is replaced.
        """
        check_owner(owner)
        check_ifname("bridge", name)
        mtu_attr = _mtu(mtu)
        link = self.link(name)
        if link is not None:
            claim(link, owner, "bridge")
            if link.kind == "bridge":
                return self.adjust(link, mtu=mtu)
            self._delete(link)
        operation = f"create bridge {name}{self._sock.where}"
        self._call(
            f"create bridge {name}",
            "link",
            "add",
            ifname=name,
            kind="bridge",
            br_mcast_snooping=0,
            address=mac_text(random_mac()),
            state="up",
            **mtu_attr,
        )
        link = self.require(name, operation)
        self._set_owner(link, owner)
        log.info("create bridge %s owner %s", self._id(link), owner)
        return self.require(name, operation)

    def ensure_vxlan(self, name: str, owner: str, port: int = 4789) -> Link:
        """Make the flow-based VXLAN device ``name`` exist (``external``: the VNI and the
        remote come per packet from the program's tunnel key, no FDB), owned by ``owner``,
        up, on UDP ``port``. A link of that name that is not ``owner``'s raises
        `ConflictError`; one that is but is not such a device is replaced."""
        check_owner(owner)
        check_ifname("vxlan", name)
        link = self.link(name)
        if link is not None:
            claim(link, owner, "vxlan")
            if link.kind == "vxlan":
                return self.adjust(link)
            self._delete(link)
        operation = f"create vxlan {name}{self._sock.where}"
        self._call(
            f"create vxlan {name}",
            "link",
            "add",
            ifname=name,
            kind="vxlan",
            vxlan_collect_metadata=1,
            vxlan_port=port,
            vxlan_learning=0,
            state="up",
        )
        link = self.require(name, operation)
        self._set_owner(link, owner)
        log.info("create vxlan %s owner %s port %d", self._id(link), owner, port)
        return self.require(name, operation)

    def _set_owner(self, link: Link, owner: str, **attrs: Any) -> None:
        """Set the owner alias of a link just created; delete the link if that fails."""
        try:
            self._call(
                f"set alias {owner} on {self._id(link)}",
                "link",
                "set",
                index=link.ifindex,
                ifalias=owner,
                **attrs,
            )
        except PydpError:
            self._delete(link)
            raise

    def ensure_veth(
        self,
        host_name: str,
        owner: str,
        peer_name: str,
        peer_netns: str | NetHost,
        peer_mac: netaddr.EUI | None = None,
        mtu: int | None = None,
        master: str | None = None,
    ) -> Link:
        """Make the veth pair ``host_name`` (here) / ``peer_name`` (in ``peer_netns``) exist.

        Both ends get the alias ``owner`` and are up; the host end is enslaved
        to the bridge ``master`` if given; the peer gets ``peer_mac`` if given;
        both get ``mtu`` if given. A pair in place is adjusted; a host end that
        is ``owner``'s but whose peer is not in place is replaced; a host end
        that is not ``owner``'s raises `ConflictError`. ``peer_netns`` is a
        namespace name, or an open `NetHost` of it (cheaper when the caller
        goes on to set addresses and routes there). Returns the host end.
        """
        spec = VethSpec(
            check_ifname("host_name", host_name),
            check_owner(owner),
            check_ifname("peer_name", peer_name),
            None if peer_mac is None else netaddr.EUI(peer_mac),
            _mtu(mtu).get("mtu"),
            None if master is None else check_ifname("master", master),
        )
        if isinstance(peer_netns, NetHost):
            return ensure_veth(self, spec, peer_netns)
        with NetHost(peer_netns) as sandbox:
            return ensure_veth(self, spec, sandbox)

    # Addresses -----------------------------------------------------------

    def addresses(self, name: str) -> list[netaddr.IPNetwork]:
        """The addresses on ``name`` (IPv4 then IPv6), with their prefix lengths."""
        link = self.require(name, f"list addresses of {name}")
        operation = f"list addresses of {self._id(link)}"
        return self._sock.read(operation, self._sock.reader.addresses, link.ifindex)

    def all_addresses(self) -> dict[int, list[netaddr.IPNetwork]]:
        """Every link's addresses by ifindex, in one dump."""
        return dict(self._sock.read("list addresses", self._sock.reader.all_addresses))

    def _has_address(self, name: str, address: netaddr.IPNetwork) -> bool:
        want = (address.ip, address.prefixlen)
        return any((net.ip, net.prefixlen) == want for net in self.addresses(name))

    def ensure_address(self, name: str, address: netaddr.IPNetwork) -> None:
        """Put ``address`` (IP and prefix length) on ``name``; other addresses stay."""
        if self._has_address(name, address):
            return
        link = self.require(name, f"add address {address} to {name}")
        extra = {}
        if address.version == 4 and address.prefixlen < 31:
            extra["broadcast"] = str(address.broadcast)
        self._call(
            f"add address {address} to {self._id(link)}",
            "addr",
            "add",
            index=link.ifindex,
            address=str(address.ip),
            prefixlen=address.prefixlen,
            family=_FAMILY[address.version],
            **extra,
        )
        log.info("add address %s to %s", address, self._id(link))

    def remove_address(self, name: str, address: netaddr.IPNetwork) -> None:
        """Remove ``address`` from ``name``; already gone (or no such link) is success."""
        link = self.link(name)
        if link is None or not self._has_address(name, address):
            return
        try:
            self._call(
                f"remove address {address} from {self._id(link)}",
                "addr",
                "del",
                index=link.ifindex,
                address=str(address.ip),
                prefixlen=address.prefixlen,
                family=_FAMILY[address.version],
            )
        except NotFoundError:
            return
        log.info("remove address %s from %s", address, self._id(link))

    # Routes --------------------------------------------------------------

    def routes(self, version: int = 4) -> list[Route]:
        """The unicast routes of the main table for IPv``version``."""
        reader = self._sock.reader
        return self._sock.read(
            f"list ipv{version} routes", reader.routes, _FAMILY[version], RT_TABLE_MAIN
        )

    def ensure_default_route(self, gateway: netaddr.IPAddress, name: str) -> None:
        """Make the default route (metric 0) go via ``gateway`` on ``name``; replace another."""
        operation = f"set default route via {gateway} dev {name}"
        link = self.require(name, operation)
        want = Route(netaddr.IPNetwork(f"{gateway}/0").cidr, gateway, link.ifindex, 0)
        if want in self.routes(gateway.version):
            return
        self._call(
            operation,
            "route",
            "replace",
            dst=str(want.dst),
            gateway=str(gateway),
            oif=link.ifindex,
            family=_FAMILY[gateway.version],
            table=RT_TABLE_MAIN,
        )
        log.info("set default route via %s dev %s", gateway, self._id(link))

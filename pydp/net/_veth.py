"""The veth half of `NetHost`: an endpoint's pair, host end here, peer in a sandbox.

Both ends carry the owner alias, so a pair is "in place" when the host end
and the peer point at each other and both are the owner's. Anything else
under the host end's name that is the owner's is replaced.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import netaddr

from pydp.errors import ConfigError
from pydp.net.links import Link, claim

if TYPE_CHECKING:
    from pydp.net.host import NetHost

__all__ = ["VethSpec", "ensure_veth", "mac_text"]

log = logging.getLogger(__name__)


def mac_text(mac: netaddr.EUI) -> str:
    """``02:42:0a:00:00:02``: the form the kernel and iproute2 use."""
    return str(netaddr.EUI(mac, dialect=netaddr.mac_unix_expanded))


@dataclass(frozen=True, slots=True)
class VethSpec:
    """What `NetHost.ensure_veth` was asked for (checked by the caller)."""

    host_name: str
    owner: str
    peer_name: str
    peer_mac: netaddr.EUI | None
    mtu: int | None
    master: str | None


def ensure_veth(host: NetHost, spec: VethSpec, sandbox: NetHost) -> Link:
    """Converge the pair described by ``spec``, with the peer in ``sandbox``; see NetHost."""
    if sandbox.netns is None:
        raise ConfigError("peer netns: expected a named namespace, got the current one")
    master = None
    if spec.master is not None:
        master = host.require(spec.master, f"create veth {spec.host_name}")
    link = host.link(spec.host_name)
    if link is not None:
        claim(link, spec.owner, "veth")
        peer = sandbox.link(spec.peer_name)
        if peer is not None and _paired(link, peer, spec.owner):
            sandbox.adjust(peer, mtu=spec.mtu, mac=spec.peer_mac)
            return host.adjust(link, mtu=spec.mtu, master=master)
        host._delete(link)
    return _create(host, spec, sandbox, master)


def _paired(link: Link, peer: Link, owner: str) -> bool:
    return (
        link.kind == peer.kind == "veth"
        and peer.alias == owner
        and link.peer_netnsid is not None
        and link.peer_ifindex == peer.ifindex
        and peer.peer_ifindex == link.ifindex
    )


def _create(host: NetHost, spec: VethSpec, sandbox: NetHost, master: Link | None) -> Link:
    peer: dict[str, Any] = {"ifname": spec.peer_name, "net_ns_fd": sandbox._sock.nsfd}
    attrs: dict[str, Any] = {"ifname": spec.host_name, "kind": "veth", "state": "up"}
    if spec.peer_mac is not None:
        peer["address"] = mac_text(spec.peer_mac)
    if spec.mtu is not None:
        peer["mtu"] = attrs["mtu"] = spec.mtu
    if master is not None:
        attrs["master"] = master.ifindex
    operation = f"create veth {spec.host_name} with peer {spec.peer_name} in netns {sandbox.netns}"
    host._call(operation, "link", "add", peer=peer, **attrs)
    link = host.require(spec.host_name, operation)
    host._set_owner(link, spec.owner)
    try:
        peer_link = sandbox.require(spec.peer_name, operation)
        sandbox._set_owner(peer_link, spec.owner, state="up")
    except BaseException:
        host._delete(link)
        raise
    log.info("create veth %s peer %s owner %s", host._id(link), sandbox._id(peer_link), spec.owner)
    return dataclasses.replace(link, alias=spec.owner)

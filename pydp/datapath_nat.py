"""The NAT half of a host's datapath: from_netdev on the uplink, and the maps it reads
(host config, networks, subnets, published ports) kept equal to what the store wants."""

from __future__ import annotations

import logging
import socket
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from netaddr import IPAddress, IPNetwork

from pydp.datapath_lb import LbDatapath
from pydp.loader import (
    Program,
    SharedObject,
    attach_cgroup,
    attach_tc,
    attach_xdp,
    bpffs_root,
    cgroup_attached,
    detach_xdp,
    prog_tag,
    tcx_prog_ids,
    xdp_attached,
)
from pydp.maps.base import TypedMap, sync_entries
from pydp.maps.config import (
    CONFIG_MAP,
    NETWORKS_MAP,
    SUBNETS_MAP,
    VNIS_MAP,
    ConfigMap,
    HostConfig,
    NetworkInfo,
    NetworkMap,
    SubnetInfo,
    SubnetMap,
    VniMap,
)
from pydp.maps.lb import LB_TABLES_MAP, SERVICES_MAP
from pydp.maps.nat import NAT_MAP, PORTS_MAP, NatMap, PortKey, PortMap, PortTarget

__all__ = ["UPLINK_OBJECT", "NatDatapath"]

log = logging.getLogger(__name__)

UPLINK_OBJECT = "uplink.bpf.o"
SOCK_OBJECT = "sock.bpf.o"
XDP_OBJECT = "xdp_uplink.bpf.o"
SOCK_PROGRAMS = {
    "connect4": "sock_connect4",
    "sendmsg4": "sock_sendmsg4",
    "recvmsg4": "sock_recvmsg4",
}
SO_NETNS_COOKIE = 71  # <asm-generic/socket.h>, Linux >= 5.14


def netns_cookie() -> int:
    """The cookie of the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


def _packed(view: TypedMap[Any, Any], entries: Mapping[Any, Any]) -> dict[bytes, bytes]:
    return {view.key_bytes(k): view.value_bytes(v) for k, v in entries.items()}


class NatDatapath:
    """uplink.bpf.o loaded with its maps pinned under ``root`` (shared with the endpoint
    program's by name)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or bpffs_root()
        self._obj = SharedObject(UPLINK_OBJECT, ("from_netdev",), self.root)
        self.from_netdev: Program = self._obj.program("from_netdev")
        self._tag = self.from_netdev.tag
        self.config = ConfigMap(self._obj.map(CONFIG_MAP))
        self.networks = NetworkMap(self._obj.map(NETWORKS_MAP))
        self.subnets = SubnetMap(self._obj.map(SUBNETS_MAP))
        self.vnis = VniMap(self._obj.map(VNIS_MAP))
        self.ports = PortMap(self._obj.map(PORTS_MAP))
        self.nat = NatMap(self._obj.map(NAT_MAP))
        self.lb = LbDatapath(
            self._obj.map(SERVICES_MAP), self._obj.map(LB_TABLES_MAP), self.nat, self.networks
        )
        self._xdp: SharedObject | None = None  # loaded when needed: its verification is the
        # costliest of all (~0.2 s), and most hosts (a veth uplink, XDP auto) never run it
        self._sock = SharedObject(
            SOCK_OBJECT,
            tuple(SOCK_PROGRAMS.values()),
            self.root,
            {"CFG_NETNS_COOKIE": netns_cookie()},
        )

    @property
    def xdp_uplink(self) -> Program:
        """The XDP program (its object loaded on first use)."""
        if self._xdp is None:
            self._xdp = SharedObject(XDP_OBJECT, ("xdp_uplink",), self.root)
        return self._xdp.program("xdp_uplink")

    def ensure_xdp(self, uplink_ifindex: int) -> bool:
        """xdp_uplink on the uplink (native mode), unless the same code runs there: the fast
        path for published ports and NAT replies; everything else it passes on to TC."""
        running = xdp_attached(uplink_ifindex, "native")
        if running and prog_tag(running) == self.xdp_uplink.tag:
            return False
        attach_xdp(self.xdp_uplink, uplink_ifindex, "native")
        return True

    def remove_xdp(self, uplink_ifindex: int) -> bool:
        """Take xdp_uplink off the uplink if it runs there (another program stays)."""
        running = xdp_attached(uplink_ifindex, "native")
        if running and prog_tag(running) == self.xdp_uplink.tag:
            return detach_xdp(uplink_ifindex)
        return False

    def ensure_sock_attached(self) -> int:
        """The connect4/sendmsg4/recvmsg4 hooks of this host at the cgroup v2 root (the
        host's own processes reach published ports); returns how many were attached."""
        attached = 0
        for hook, name in SOCK_PROGRAMS.items():
            prog = self._sock.program(name)
            running = cgroup_attached(hook, self.root)
            if running and prog_tag(running) == prog.tag:
                continue
            attach_cgroup(prog, hook, self.root)
            attached += 1
        return attached

    def ensure_attached(self, uplink_ifindex: int) -> bool:
        """from_netdev at the uplink's TC ingress, unless the same code runs there."""
        ids = tcx_prog_ids(uplink_ifindex, "ingress") or []
        if any(prog_tag(i) == self._tag for i in ids):
            return False
        attach_tc(self.from_netdev, uplink_ifindex, "ingress", root=self.root)
        return True

    def sync(
        self,
        config: HostConfig,
        networks: Mapping[int, NetworkInfo],
        subnets: Mapping[IPNetwork, int | SubnetInfo],
        ports: Mapping[PortKey, PortTarget],
    ) -> None:
        """Make the NAT maps hold exactly what is given; purge the connections of published
        ports that went away."""
        self.config.update_batch({0: config})
        empty = self.networks.value_bytes(NetworkInfo())
        sync_entries(self.networks, _packed(self.networks, networks), empty=empty)
        vnis = {info.vni: index for index, info in networks.items() if info.vni}
        sync_entries(self.vnis, _packed(self.vnis, vnis))
        sync_entries(self.subnets, _packed(self.subnets, subnets), batch=False)
        before = self.ports.snapshot()
        sync_entries(self.ports, _packed(self.ports, ports))
        gone = {t.address for k, t in before.items() if ports.get(k) != t}
        if gone:
            self.purge(gone)

    def purge(self, addresses: Collection[IPAddress]) -> int:
        """Delete every NAT/conntrack entry of connections to or from these endpoint
        addresses (no stale UDP flows after a port or container goes); returns how many."""
        doomed = [
            k
            for k, e in self.nat.items()
            if e.address in addresses or k.saddr in addresses or k.daddr in addresses
        ]
        for k in doomed:
            self.nat.discard(k)
        if doomed:
            log.info("purged %d NAT entries of %s", len(doomed), ", ".join(map(str, addresses)))
        return len(doomed)

    def close(self) -> None:
        self._obj.close()
        if self._xdp is not None:
            self._xdp.close()
        self._sock.close()

    def __enter__(self) -> NatDatapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

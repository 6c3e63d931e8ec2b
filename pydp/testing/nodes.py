"""The namespaces of a topology: hosts, containers and the fabric between hosts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import netaddr

from pydp.testing import _proc
from pydp.testing._names import IFNAMSIZ_MAX, link_name
from pydp.testing.errors import TopologyError

if TYPE_CHECKING:
    from pydp.testing.topology import Topology

__all__ = ["Container", "Fabric", "Host", "LinkInfo", "Namespace"]

log = logging.getLogger(__name__)

FABRIC_BRIDGE = "br0"


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """A network interface as seen in one namespace.

    ``address`` is the address configured on it by the topology, if any.
    """

    netns: str
    ifname: str
    ifindex: int
    mac: netaddr.EUI
    address: netaddr.IPNetwork | None = None


def _check_ifname(what: str, ifname: str) -> str:
    bad = not ifname or len(ifname) > IFNAMSIZ_MAX or any(c in "/:" or c.isspace() for c in ifname)
    if bad or ifname in (".", ".."):
        raise ValueError(f"{what}: expected an interface name of 1-15 characters, got {ifname!r}")
    return ifname


def _eui(mac: str | netaddr.EUI) -> netaddr.EUI:
    return netaddr.EUI(mac, dialect=netaddr.mac_unix_expanded)


def _mtu_args(mtu: int | None) -> list[str]:
    return [] if mtu is None else ["mtu", str(mtu)]


class Namespace:
    """A network namespace made by a `Topology` (base of `Host`, `Container`, `Fabric`).

    ``name`` is the short name given by the test, ``netns`` the namespace's
    unique name under ``/run/netns``.
    """

    def __init__(self, topology: Topology, name: str, netns: str) -> None:
        self.topology = topology
        self.name = name
        self.netns = netns

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} netns={self.netns}>"

    def run(
        self,
        cmd: Sequence[str],
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
        own_sysfs: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in this namespace (``ip netns exec``) and return its result.

        Output is captured as text. Raises `CommandError` on a non-zero exit
        when ``check`` is true, and on a timeout or exec failure always.
        ``own_sysfs=False`` keeps the caller's mounts (``nsenter --net``): what a
        process needs that pins BPF objects under /sys/fs/bpf.
        """
        return _proc.run(
            cmd, netns=self.netns, check=check, timeout=timeout, input=input, own_sysfs=own_sysfs
        )

    def ip(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``ip -n NETNS ARGS...``; for example ``host.ip("link", "set", "br0", "up")``."""
        return _proc.run(["ip", "-n", self.netns, *args], input=input)

    def ip_batch(self, commands: Sequence[str]) -> None:
        """Run several ``ip`` commands (one per string, without ``ip``) in one process."""
        if commands:
            self.ip("-batch", "-", input="\n".join(commands) + "\n")

    def popen(
        self, cmd: Sequence[str], env: dict[str, str] | None = None, own_sysfs: bool = True
    ) -> _proc.Background:
        """Start ``cmd`` in this namespace in the background; it is stopped at teardown.
        ``own_sysfs=False`` enters with nsenter, keeping the machine's /sys (and bpffs)."""
        return self.topology._track(_proc.Background(cmd, self.netns, env, own_sysfs))

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        """Move the calling thread into this namespace for the ``with`` block.

        In-process code then acts here (sockets, netlink, BPF attach by
        ifindex). Other threads are unaffected, but threads started inside
        the block inherit this namespace. ``/sys`` still shows the namespace
        the process was started in (the mount namespace is not changed).
        """
        with _proc.enter_netns(self.netns):
            yield

    def ipr(self) -> Any:
        """Return a pyroute2 ``IPRoute`` bound to this namespace, closed at teardown."""
        from pyroute2 import IPRoute

        return self.topology._track_closer(IPRoute(netns=self.netns))

    def link(self, ifname: str) -> LinkInfo:
        """Return the current ifindex and MAC address of ``ifname`` in this namespace."""
        out = self.ip("-j", "link", "show", "dev", ifname).stdout
        try:
            info = json.loads(out)[0]
            mac = _eui(info["address"])
            return LinkInfo(self.netns, info["ifname"], int(info["ifindex"]), mac)
        except (ValueError, LookupError, TypeError, netaddr.AddrFormatError) as exc:
            raise TopologyError(f"show link {ifname} in {self.netns}: bad output {out!r}") from exc

    def sysctl(self, key: str, value: str | int) -> None:
        """Set the namespaced sysctl ``key`` (``net.ipv4.ip_forward`` or slash form)."""
        path = key if "/" in key else key.replace(".", "/")
        with self.enter(), open(os.path.join("/proc/sys", path), "w") as f:
            f.write(f"{value}\n")


class Fabric(Namespace):
    """The switch between hosts: a namespace holding the Linux bridge ``br0``."""

    bridge = FABRIC_BRIDGE

    def _setup(self) -> None:
        self.ip_batch(
            [
                f"link add {self.bridge} type bridge stp_state 0",
                f"link set {self.bridge} up",
            ]
        )


class Host(Namespace):
    """A host: a namespace with ``lo`` up and forwarding on, holding containers."""

    def __init__(self, topology: Topology, name: str, netns: str) -> None:
        super().__init__(topology, name, netns)
        self.containers: dict[str, Container] = {}
        self.underlay: dict[str, LinkInfo] = {}

    def _setup(self) -> None:
        self.sysctl("net.ipv4.ip_forward", 1)
        self.sysctl("net.ipv6.conf.all.forwarding", 1)

    def connect_fabric(
        self, address: str | netaddr.IPNetwork, ifname: str = "eth0", mtu: int | None = None
    ) -> LinkInfo:
        """Plug this host into the fabric bridge through a veth and return the host end.

        The host end is ``ifname`` (the host's underlay NIC) with ``address``,
        up; the other end is enslaved to the fabric's bridge.
        """
        net = netaddr.IPNetwork(address)
        _check_ifname("ifname", ifname)
        fabric = self.topology.fabric
        peer = link_name("vf")
        mtu_args = " ".join(_mtu_args(mtu))
        self.ip_batch(
            [f"link add {ifname} {mtu_args} type veth peer name {peer} netns {fabric.netns}"]
        )
        fabric.ip_batch([f"link set {peer} master {fabric.bridge} up"])
        self.ip_batch([*_addr_cmds(net, ifname), f"link set {ifname} up"])
        info = self.link(ifname)
        info = LinkInfo(info.netns, info.ifname, info.ifindex, info.mac, net)
        self.underlay[ifname] = info
        log.info("connect %s %s (ifindex %d) to fabric %s", self.netns, ifname, info.ifindex, peer)
        return info

    def add_bridge(self, name: str, address: str | netaddr.IPNetwork | None = None) -> LinkInfo:
        """Create a Linux bridge in this host, up, with ``address`` on it if given."""
        net = None if address is None else netaddr.IPNetwork(address)
        _check_ifname("bridge", name)
        addr = [] if net is None else _addr_cmds(net, name)
        self.ip_batch([f"link add {name} type bridge", *addr, f"link set {name} up"])
        info = self.link(name)
        return LinkInfo(info.netns, info.ifname, info.ifindex, info.mac, net)

    def add_container(
        self,
        name: str,
        address: str | netaddr.IPNetwork | None = "10.0.0.2/24",
        gateway: str | netaddr.IPAddress | None = None,
        ifname: str = "eth0",
        host_ifname: str | None = None,
        mtu: int | None = None,
        mac: str | netaddr.EUI | None = None,
        bridge: str | None = None,
    ) -> Container:
        """Create a container namespace joined to this host by a veth pair.

        The container end is ``ifname`` with ``address`` (and ``mac`` if
        given), up, with a default route via ``gateway`` if given (``onlink``
        when the gateway is outside the subnet). The host end is
        ``host_ifname`` (default: a unique ``vc...`` name), up, in this host,
        and enslaved to ``bridge`` if given.
        """
        _check_ifname("ifname", ifname)
        host_ifname = _check_ifname("host_ifname", host_ifname or link_name("vc"))
        net = None if address is None else netaddr.IPNetwork(address)
        gw = None if gateway is None else netaddr.IPAddress(gateway)
        netns = self.topology._create_netns(name)
        container = Container(self, name, netns, ifname)
        mtu_args = " ".join(_mtu_args(mtu))
        mac_args = "" if mac is None else f"address {_eui(mac)}"
        self.ip_batch(
            [
                f"link add {host_ifname} {mtu_args} type veth"
                f" peer name {ifname} netns {netns} {mtu_args} {mac_args}",
                f"link set {host_ifname} up",
                *([] if bridge is None else [f"link set {host_ifname} master {bridge}"]),
            ]
        )
        commands = [] if net is None else _addr_cmds(net, ifname)
        commands.append(f"link set {ifname} up")
        if gw is not None:
            onlink = "" if net is not None and gw in net else " onlink"
            commands.append(f"route add default via {gw} dev {ifname}{onlink}")
        container.ip_batch(commands)
        container._set_links(net, gw, self.link(host_ifname))
        self.containers[name] = container
        log.info("add container %s to %s via %s", netns, self.netns, host_ifname)
        return container


def _addr_cmds(net: netaddr.IPNetwork, ifname: str) -> list[str]:
    nodad = " nodad" if net.version == 6 else ""
    return [f"addr add {net} dev {ifname}{nodad}"]


class Container(Namespace):
    """A container: a namespace whose ``ifname`` is a veth to its host.

    ``link`` is the container end, ``host_link`` the host end (in the host's
    namespace); ``address`` is the container's address with its prefix length.
    """

    link_info: LinkInfo
    host_link: LinkInfo

    def __init__(self, host: Host, name: str, netns: str, ifname: str) -> None:
        super().__init__(host.topology, name, netns)
        self.host = host
        self.ifname = ifname
        self.address: netaddr.IPNetwork | None = None
        self.gateway: netaddr.IPAddress | None = None

    def _set_links(
        self, net: netaddr.IPNetwork | None, gw: netaddr.IPAddress | None, host_link: LinkInfo
    ) -> None:
        self.address = net
        self.gateway = gw
        info = self.link(self.ifname)
        self.link_info = LinkInfo(info.netns, info.ifname, info.ifindex, info.mac, net)
        self.host_link = host_link

    @property
    def mac(self) -> netaddr.EUI:
        """MAC address of the container end of the veth."""
        return self.link_info.mac

    @property
    def ifindex(self) -> int:
        """Ifindex of the container end of the veth, in the container's namespace."""
        return self.link_info.ifindex

    @property
    def host_ifname(self) -> str:
        """Name of the host end of the veth, in the host's namespace."""
        return self.host_link.ifname

    @property
    def host_ifindex(self) -> int:
        """Ifindex of the host end of the veth, in the host's namespace."""
        return self.host_link.ifindex

    @property
    def host_mac(self) -> netaddr.EUI:
        """MAC address of the host end of the veth."""
        return self.host_link.mac

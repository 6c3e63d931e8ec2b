"""The reconciler: converge the kernel to the store, level-triggered and idempotent.

Given the desired state (networks, endpoints, sandboxes) and the kernel as it
is, it creates what is missing, adjusts what differs and removes what pydp owns
but nobody wants, in an order that never strands anything: namespaces, bridges,
endpoints, then the stale rest. Running it twice changes nothing; a run killed
halfway is finished by the next one. Everything pydp creates is marked (link
alias ``pydp:...``, namespace prefix, pin root), so it never touches the rest.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netaddr import EUI, IPAddress, IPNetwork, mac_unix_expanded

from pydp.agent.uplink import Uplink, find_uplink
from pydp.control.driver import ENABLE_MASQUERADE, PARENT, BridgeDriver, overlay_mtu
from pydp.control.mesh import is_mesh
from pydp.control.model import (
    ENDPOINTS,
    NETWORKS,
    NODES,
    SANDBOXES,
    SERVICES,
    SETTINGS,
    Endpoint,
    Network,
    Node,
    Sandbox,
    Service,
    Settings,
)
from pydp.control.nodes import node_name
from pydp.control.ports import PortMapping
from pydp.datapath import ENDPOINT_F_LB_BACKEND, ENDPOINT_F_MESH, ENDPOINT_F_REMOTE, Datapath
from pydp.datapath_lb import ServiceSpec
from pydp.datapath_nat import NatDatapath
from pydp.datapath_overlay import VXLAN_NAME, VXLAN_OWNER, VXLAN_PORT, OverlayDatapath
from pydp.errors import ConflictError, NotFoundError
from pydp.loader import prune_links
from pydp.maps import Endpoint as MapEndpoint
from pydp.maps.config import HostConfig, NetworkInfo, SubnetInfo
from pydp.maps.endpoint import EndpointKey, Scoped, address_of
from pydp.maps.lb import LbBackend
from pydp.maps.nat import PortKey, PortTarget
from pydp.net import (
    Link,
    NetHost,
    enable_gro,
    netns_create,
    netns_delete,
    netns_list,
    sysctl,
    veth_name,
)
from pydp.store import Store

__all__ = ["Desired", "Reconciler", "crashpoint", "endpoint_owner", "network_owner"]

log = logging.getLogger(__name__)

CRASH_ENV = "PYDP_CRASH_AT"  # tests: SIGKILL ourselves at the named point
PROTO_NUMBERS = {"tcp": 6, "udp": 17}
READY = 0x7064  # IFLA_GROUP of an endpoint veth whose sandbox side is configured ("pd")
READY_GW = 0x7067  # ... and whose interface carries the sandbox's default route ("pg")
WIRED = ("bridge", "overlay")  # the drivers whose endpoints get a veth and the datapath
ROUTER_OUI = 0x0242FF000000  # overlay router MACs: 02:42:ff and the VNI


def _scope(net: Network) -> int:
    """The endpoint key scope of a network's endpoints: an overlay's own (overlay subnets
    may overlap), else 0 (bridge networks' addresses are unique on a host)."""
    return net.index if net.driver == "overlay" else 0


def map_key(ep: Endpoint, net: Network) -> EndpointKey:
    assert ep.address is not None
    scope = _scope(net)
    return Scoped(ep.address, scope) if scope else ep.address


def router_mac(net: Network) -> EUI:
    """An overlay network's virtual router MAC (every ARP there is answered with it): the
    same on every node, so frames tunnelled in need no rewrite to be believed."""
    return EUI(ROUTER_OUI | (net.vni or 0), dialect=mac_unix_expanded)


def crashpoint(name: str) -> None:
    """Die here, abruptly, when ``$PYDP_CRASH_AT`` names this point (crash-safety tests)."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("crashpoint %s: killing myself", name)
        os.kill(os.getpid(), signal.SIGKILL)


def network_owner(net: Network) -> str:
    return f"pydp:net/{net.id[:12]}"


def endpoint_owner(ep: Endpoint) -> str:
    return f"pydp:ep/{ep.id[:12]}"


@dataclass
class Desired:
    """The store's state, read in one transaction."""

    networks: dict[str, Network] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    sandboxes: dict[str, Sandbox] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    services: list[Service] = field(default_factory=list)
    node: str = ""  # the node this host is: what it wires, and what it tunnels to
    remote: list[Endpoint] = field(default_factory=list)  # other nodes' overlay endpoints
    nodes: dict[str, Node] = field(default_factory=dict)  # registered (alive) nodes

    @classmethod
    def read(cls, store: Store, node: str = "") -> Desired:
        """What this node must hold: the networks it sees, its own sandboxes and endpoints,
        the other nodes' endpoints on overlay networks, the services of its networks."""
        with store.transaction() as t:
            nets = [Network.from_json(e.value) for e in t.list(NETWORKS)]
            eps = [Endpoint.from_json(e.value) for e in t.list(ENDPOINTS)]
            sbs = [Sandbox.from_json(e.value) for e in t.list(SANDBOXES)]
            svcs = [Service.from_json(e.value) for e in t.list(SERVICES)]
            alive = [Node.from_json(e.value) for e in t.list(NODES)]
            entry = t.get(SETTINGS)
        settings = Settings() if entry is None else Settings.from_json(entry.value)
        seen = {n.id: n for n in nets if n.visible_on(node)}
        local = [ep for ep in eps if ep.network_id in seen and ep.local_to(node)]
        remote = [
            ep
            for ep in eps
            if ep.network_id in seen
            and not ep.local_to(node)
            and seen[ep.network_id].driver == "overlay"
        ]
        return cls(
            seen,
            local,
            {s.name: s for s in sbs if s.local_to(node)},
            settings,
            [v for v in svcs if v.network_id in seen],
            node,
            remote,
            {n.name: n for n in alive},
        )

    def vip_services(self) -> list[tuple[Service, Network]]:
        """Services with a VIP on a network this host has (dnsrr ones have none)."""
        out = []
        for svc in self.services:
            net = self.networks.get(svc.network_id)
            if svc.mode == "vip" and svc.vip is not None and net is not None:
                out.append((svc, net))
        return out

    def alive(self, node: str | None) -> bool:
        """Whether ``node`` can take connections: this one, one whose agent holds its lease,
        or none named (an IP:PORT backend). A node whose lease ended leaves every backend
        set at once."""
        return node is None or node == self.node or node in self.nodes

    def backend_addresses(self) -> set[IPAddress]:
        """Every address that backs a service (draining ones too: their replies still need
        the VIP as source)."""
        return {b.address for svc, _ in self.vip_services() for b in svc.backends}

    def service_specs(self) -> list[ServiceSpec]:
        """The services as the datapath takes them."""
        specs = []
        for svc, net in self.vip_services():
            assert svc.vip is not None
            active = tuple(b for b in svc.active_backends() if self.alive(b.node))
            specs.append(
                ServiceSpec(
                    index=svc.index,
                    vip=svc.vip,
                    network=net.index,
                    frontends=tuple((p.port, PROTO_NUMBERS[p.proto]) for p in svc.ports),
                    backends=tuple(LbBackend(b.address, b.port or 0) for b in active),
                    identities=tuple(b.identity for b in active),
                    weights=tuple(b.weight for b in active),
                    lb=svc.lb,
                    size=svc.table_size(),
                    draining=frozenset(
                        (b.address, b.port or p.port)
                        for b in svc.backends
                        if b.draining
                        for p in svc.ports
                    ),
                )
            )
        return specs

    def mesh(self) -> dict[str, Endpoint]:
        """This node's routing-mesh endpoint on each overlay network, by network id."""
        return {ep.network_id: ep for ep in self.endpoints if is_mesh(ep)}

    def bridges(self) -> dict[str, Network]:
        """Bridge networks by bridge name."""
        return {
            BridgeDriver.bridge_name(n): n for n in self.networks.values() if n.driver == "bridge"
        }

    def wired(self) -> list[tuple[Endpoint, Network, Sandbox]]:
        """Endpoints that need a veth: bridge and overlay networks, sandboxes with a
        namespace (this node's: the others' are not in ``endpoints``)."""
        out = []
        for ep in self.endpoints:
            net, sb = self.networks.get(ep.network_id), self.sandboxes.get(ep.sandbox)
            if net and sb and sb.netns and net.driver in WIRED and ep.address is not None:
                out.append((ep, net, sb))
        return sorted(out, key=lambda x: (x[2].name, x[0].ifname))


class Reconciler:
    """Converges this host's kernel (the calling thread's netns) to the store."""

    def __init__(
        self,
        store: Store,
        netns_prefix: str,
        bpffs: Path | None = None,
        uplink: str | None = None,
        node: str | None = None,
    ) -> None:
        self.store = store
        self.netns_prefix = netns_prefix
        self.bpffs = bpffs
        self.uplink = uplink  # --uplink; else $PYDP_UPLINK; else the default route's
        self.node = node_name(node)  # --node; else $PYDP_NODE; else the host name
        # loaded once per process and kept: a long-lived agent's passes then pay no object
        # load (~0.1 s) and the LB tables' cache of what they hold lives on between them
        self._dp: Datapath | None = None
        self._natdp: NatDatapath | None = None

    def datapaths(self) -> tuple[Datapath, NatDatapath]:
        """The endpoint and NAT datapaths (loaded on first use, then kept)."""
        if self._dp is None:
            self._dp = Datapath(root=self.bpffs)
        if self._natdp is None:
            self._natdp = NatDatapath(root=self.bpffs)
        return self._dp, self._natdp

    def close(self) -> None:
        """Let go of the loaded objects (pins and attachments stay)."""
        for obj in (self._dp, self._natdp):
            if obj is not None:
                obj.close()
        self._dp = self._natdp = None

    def check_network(self, net: Network) -> None:
        """Before a network is stored: its bridge name must be free or pydp's, its parent
        interface must exist."""
        if net.driver != "bridge":
            return
        name = BridgeDriver.bridge_name(net)
        with NetHost() as host:
            link = host.link(name)
            if link is not None and link.owner is None:
                raise ConflictError(
                    f"-o com.docker.network.bridge.name: {name} is a link pydp does not own;"
                    " choose another name"
                )
            parent = net.options.get(PARENT)
            if parent is not None and host.link(parent) is None:
                raise NotFoundError(f"-o {PARENT}: no interface {parent} on this host")

    @staticmethod
    def check_ports(ports: Sequence[PortMapping]) -> None:
        """Before ports are stored: a host port a process on this host holds is refused."""
        for pm in ports:
            if pm.host_port == 0:
                continue
            kind = socket.SOCK_STREAM if pm.proto == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((str(pm.host_ip or "0.0.0.0"), pm.host_port))
                except OSError as exc:
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        raise ConflictError(
                            f"--publish: host port {pm.host_port}/{pm.proto} is in use by a"
                            " process on this host"
                        ) from None
                    if exc.errno != errno.EADDRNOTAVAIL:
                        raise

    def run(self) -> Desired:
        """One pass: namespaces, bridges, endpoints, then everything stale."""
        desired = Desired.read(self.store, self.node)
        with NetHost() as host:
            self._sandboxes(desired)
            links = {link.name: link for link in host.links()}  # one dump serves every step
            self._bridges(host, desired, links)
            crashpoint("reconcile:after-bridges")
            vxlan = self._vxlan(host, desired, links)
            dp, nat = self.datapaths()
            removed = self._endpoints(host, desired, dp, links)
            self._nat(host, desired, links, nat, removed, vxlan)
            self._stale(host, desired, links)
        return desired

    def _sandboxes(self, d: Desired) -> None:
        """Create missing namespaces; look inside those without endpoints (the others are
        checked through their endpoints)."""
        existing = set(netns_list(self.netns_prefix))
        with_endpoints = {sb.name for _, _, sb in d.wired()}
        for sb in d.sandboxes.values():
            if sb.netns is None:
                continue
            if sb.netns not in existing:
                netns_create(sb.netns)
            if sb.netns not in existing or sb.name not in with_endpoints:
                self._sandbox_basics(sb.netns)

    @staticmethod
    def _sandbox_basics(netns: str) -> None:
        # IPv4-only networks, as Docker's without --ipv6: no IPv6 on new interfaces
        # (no link-local addresses, no DAD and MLD flooding the bridge)
        for scope in ("all", "default"):
            sysctl(f"net.ipv6.conf.{scope}.disable_ipv6", "1", netns)
        with NetHost(netns) as ns:
            ns.set_up("lo")

    def _bridges(self, host: NetHost, d: Desired, links: dict[str, Link]) -> None:
        """Each bridge network's bridge, gateway address and parent port; bridges the dump
        shows complete are left alone."""
        addrs = host.all_addresses()
        for name, net in d.bridges().items():
            assert net.pool is not None
            gateway = IPNetwork(f"{net.pool.gateway}/{net.pool.subnet.prefixlen}")
            parent = net.options.get(PARENT)
            if _bridge_in_place(links, addrs, name, net, gateway):
                continue
            bridge = host.ensure_bridge(name, network_owner(net), BridgeDriver.mtu(net))
            host.ensure_address(name, gateway)
            if parent is not None:  # the user's underlay port: enslaved, never owned
                port = host.require(parent, f"enslave {parent} to {name}")
                links[parent] = host.adjust(port, master=bridge)
            links[name] = bridge

    def _vxlan(self, host: NetHost, d: Desired, links: dict[str, Link]) -> int:
        """The host's one VXLAN device, with from_overlay at its ingress, once this node sees
        an overlay network; its ifindex (0: none)."""
        if not any(n.driver == "overlay" for n in d.networks.values()):
            return 0
        link = links.get(VXLAN_NAME)
        if link is None or link.kind != "vxlan" or link.owner != VXLAN_OWNER or not link.up:
            link = host.ensure_vxlan(VXLAN_NAME, VXLAN_OWNER, VXLAN_PORT)
            links[VXLAN_NAME] = link
        with OverlayDatapath(root=self.bpffs) as ov:
            ov.ensure_attached(link.ifindex)
        return link.ifindex

    def _uplink_mtu(self, host: NetHost, links: dict[str, Link]) -> int:
        try:
            up = find_uplink(host, self.uplink)
        except NotFoundError:
            return 1500
        link = links.get(up.name)
        return 1500 if link is None else link.mtu

    def _endpoints(
        self, host: NetHost, d: Desired, dp: Datapath, links: dict[str, Link]
    ) -> list[EndpointKey]:
        """Endpoints whose host-side veth shows them complete (owner, bridge, MTU, peer in a
        namespace, and the READY mark set after their sandbox side was done) are left alone;
        the others are wired, sandbox by sandbox. Other nodes' overlay endpoints are
        written as remote entries (their node's underlay address), while that node is
        alive (registered)."""
        wanted: dict[EndpointKey, MapEndpoint] = {}
        backends = d.backend_addresses()
        uplink_mtu = 0
        for name, eps in self._by_sandbox(d).items():
            netns = d.sandboxes[name].netns
            assert netns is not None
            if not uplink_mtu and any(net.driver == "overlay" for _, net, _ in eps):
                uplink_mtu = self._uplink_mtu(host, links)
            shaped = [(ep, net, g, _shape(net, uplink_mtu)) for ep, net, g in eps]
            todo = [x for x in shaped if not _in_place(links, x[0], x[2], *x[3])]
            if todo:
                with NetHost(netns) as ns:
                    self._sandbox_basics(netns)
                    for ep, net, group, (master, mtu) in todo:
                        links[veth_name(ep.id)] = self._wire(host, ns, ep, net, group, master, mtu)
                        crashpoint("reconcile:after-veth")
            for ep, net, _ in eps:
                link = links[veth_name(ep.id)]
                dp.ensure_attached(link.ifindex)
                assert ep.address is not None and ep.mac is not None
                flags = ENDPOINT_F_LB_BACKEND if ep.address in backends else 0
                wanted[map_key(ep, net)] = MapEndpoint(link.ifindex, ep.mac, net.index, flags)
        for ep in d.mesh().values():  # no interface: the tunnel's replies come to it
            net = d.networks[ep.network_id]
            assert ep.address is not None and ep.mac is not None
            wanted[map_key(ep, net)] = MapEndpoint(0, ep.mac, net.index, ENDPOINT_F_MESH)
        for ep in d.remote:
            peer = d.nodes.get(ep.node or "")
            net = d.networks[ep.network_id]
            if peer is None or peer.address is None or ep.address is None or ep.mac is None:
                continue  # its node is down: no tunnel to it
            # a backend's frames out of the tunnel are looked up for service replies
            flags = ENDPOINT_F_REMOTE | (ENDPOINT_F_LB_BACKEND if ep.address in backends else 0)
            wanted[map_key(ep, net)] = MapEndpoint(0, ep.mac, net.index, flags, node=peer.address)
        return dp.sync_endpoints(wanted)

    def _nat(
        self,
        host: NetHost,
        d: Desired,
        links: dict[str, Link],
        nat: NatDatapath,
        removed: list[EndpointKey],
        vxlan: int = 0,
    ) -> None:
        """The uplink, every bridge network's masquerade setting and subnet, every published
        port; the connections of removed endpoints are forgotten."""
        try:
            up: Uplink | None = find_uplink(host, self.uplink)
        except NotFoundError as exc:
            if self.uplink:
                raise
            log.info("no NAT: %s", exc)
            up = None
        lo, hi = d.settings.nat_ports
        config = HostConfig(0, None, lo, hi, vxlan_ifindex=vxlan)
        if up is not None:
            config = HostConfig(up.ifindex, up.address.ip, lo, hi, vxlan_ifindex=vxlan)
        networks, subnets = {}, {}
        for name, net in d.bridges().items():
            assert net.pool is not None
            masq = net.options.get(ENABLE_MASQUERADE, "true") != "false"
            bridge = links.get(name)
            mac = None if bridge is None else bridge.mac
            networks[net.index] = NetworkInfo(masq) if mac is None else NetworkInfo(masq, mac)
            subnets[net.pool.subnet] = SubnetInfo(net.index, net.pool.gateway)
        mesh = d.mesh()
        for net in d.networks.values():
            if net.driver != "overlay" or net.pool is None:
                continue
            # egress leaves from the container's own node, masqueraded (no docker_gwbridge)
            m = mesh.get(net.id)
            addr = None if m is None else m.address
            networks[net.index] = NetworkInfo(True, router_mac(net), net.vni or 0, addr)
            subnets[net.pool.subnet] = SubnetInfo(net.index, net.pool.gateway)
        ports = {
            PortKey(PROTO_NUMBERS[pm.proto], pm.host_port, pm.host_ip): PortTarget(
                ep.address, pm.container_port, scope=_scope(net)
            )
            for ep, net, _ in d.wired()
            if ep.address is not None
            for pm in ep.ports
        }
        for svc, _ in d.vip_services():  # a published service port leads to its frontend
            assert svc.vip is not None
            for host_port, sp in svc.publish:
                key = PortKey(PROTO_NUMBERS[sp.proto], host_port)
                ports[key] = PortTarget(svc.vip, sp.port, service=True)
        nat.lb.sync(d.service_specs())  # tables before the ports that lead to them
        nat.sync(config, networks, subnets, ports)
        if removed:
            nat.purge({address_of(k) for k in removed})
        if up is not None:
            # as dockerd does: the host routes for its containers (what pydp does not
            # redirect itself -- TTL <= 1, a destination off the uplink -- the stack forwards)
            sysctl("net.ipv4.ip_forward", "1")
            nat.ensure_attached(up.ifindex)
            uplink_link = links.get(up.name)
            xdp = d.settings.xdp
            # auto: a veth uplink gains nothing from XDP (its frames are skbs already, and
            # XDP costs it GSO: 0.3x the TC path's throughput measured) -- a NIC does
            if xdp == "on" or (
                xdp == "auto" and (uplink_link is None or uplink_link.kind != "veth")
            ):
                nat.ensure_xdp(up.ifindex)
            else:
                nat.remove_xdp(up.ifindex)
        if ports:
            nat.ensure_sock_attached()

    @staticmethod
    def _by_sandbox(d: Desired) -> dict[str, list[tuple[Endpoint, Network, int]]]:
        """Each sandbox's wired endpoints with the mark each must carry: its lowest
        interface holds the default route (READY_GW), the others READY."""
        out: dict[str, list[tuple[Endpoint, Network, int]]] = {}
        for ep, net, sb in d.wired():  # sorted by sandbox, then interface
            first = sb.name not in out
            out.setdefault(sb.name, []).append((ep, net, READY_GW if first else READY))
        return out

    @staticmethod
    def _wire(
        host: NetHost,
        ns: NetHost,
        ep: Endpoint,
        net: Network,
        group: int,
        master: str | None,
        mtu: int | None,
    ) -> Link:
        """Make the endpoint's veth (enslaved to ``master``, the bridge; an overlay's has
        none), address and (on READY_GW) default route, then mark the host side: the mark
        is the last step, so a crash before it is redone next time."""
        assert ep.address is not None and net.pool is not None
        link = host.ensure_veth(
            veth_name(ep.id),
            endpoint_owner(ep),
            ep.ifname,
            ns,
            peer_mac=ep.mac,
            mtu=mtu,
            master=master,
        )
        sysctl(f"net.ipv6.conf.{link.name}.disable_ipv6", "1")  # the host side carries IPv4 only
        ns.ensure_address(ep.ifname, IPNetwork(f"{ep.address}/{net.pool.subnet.prefixlen}"))
        enable_gro(ns, ep.ifname)  # frames the uplink's XDP redirects here need GRO (NAPI)
        if group == READY_GW:
            ns.ensure_default_route(net.pool.container_gateway, ep.ifname)
        host.set_group(link, group)
        return host.require(link.name, f"show endpoint veth {link.name}")

    def _stale(self, host: NetHost, d: Desired, links: dict[str, Link]) -> None:
        owners = {endpoint_owner(ep) for ep in d.endpoints}
        owners |= {network_owner(n) for n in d.networks.values()}
        # endpoints first: a bridge goes after the veths enslaved to it
        for prefix in ("pydp:ep/", "pydp:net/"):
            for link in list(links.values()):
                if link.owner and link.owner.startswith(prefix) and link.owner not in owners:
                    host.delete_link(link.name)
                    del links[link.name]
        wanted_ns = {sb.netns for sb in d.sandboxes.values() if sb.netns}
        for name in netns_list(self.netns_prefix):
            if name not in wanted_ns:
                netns_delete(name)
        prune_links(self.bpffs, live={link.ifindex for link in links.values()})


def _bridge_in_place(
    links: dict[str, Link],
    addrs: dict[int, list[IPNetwork]],
    name: str,
    net: Network,
    gateway: IPNetwork,
) -> bool:
    """Whether the dump shows a network's bridge complete: ours, up, MTU, gateway, port."""
    link = links.get(name)
    mtu = BridgeDriver.mtu(net)
    parent = net.options.get(PARENT)
    port = None if parent is None else links.get(parent)
    return (
        link is not None
        and link.kind == "bridge"
        and link.owner == network_owner(net)
        and link.up
        and (mtu is None or link.mtu == mtu)
        and any(
            a.ip == gateway.ip and a.prefixlen == gateway.prefixlen
            for a in addrs.get(link.ifindex, [])
        )
        and (parent is None or (port is not None and port.master == link.ifindex and port.up))
    )


def _shape(net: Network, uplink_mtu: int) -> tuple[str | None, int | None]:
    """An endpoint veth's master and MTU: a bridge network's bridge and its MTU option; an
    overlay's no master (the program answers ARP, no bridge) and the uplink's MTU less the
    VXLAN headers."""
    if net.driver == "overlay":
        return None, overlay_mtu(net, uplink_mtu)
    return BridgeDriver.bridge_name(net), BridgeDriver.mtu(net)


def _in_place(
    links: dict[str, Link], ep: Endpoint, group: int, master: str | None, mtu: int | None
) -> bool:
    """Whether the host side of ep's veth shows the endpoint fully configured."""
    link = links.get(veth_name(ep.id))
    bridge = None if master is None else links.get(master)
    return (
        link is not None
        and (master is None or bridge is not None)
        and link.owner == endpoint_owner(ep)
        and link.group == group
        and link.up
        and link.master == (None if bridge is None else bridge.ifindex)
        and link.peer_netnsid is not None
        and (mtu is None or link.mtu == mtu)
    )

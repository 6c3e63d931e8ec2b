"""The reconciler: converge the kernel to the store, level-triggered and idempotent.

Given the desired state (networks, endpoints, sandboxes) and the kernel as it
is, it creates what is missing, adjusts what differs and removes what pydp owns
but nobody wants, in an order that never strands anything: namespaces, bridges,
endpoints, then the stale rest. Running it twice changes nothing; a run killed
halfway is finished by the next one. Everything pydp creates is marked (link
alias ``pydp:...``, namespace prefix, pin root), so it never touches the rest.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from netaddr import IPAddress, IPNetwork

from pydp.control.driver import PARENT, BridgeDriver
from pydp.control.model import ENDPOINTS, NETWORKS, SANDBOXES, Endpoint, Network, Sandbox
from pydp.datapath import Datapath
from pydp.errors import ConflictError, NotFoundError
from pydp.loader import prune_links
from pydp.maps import Endpoint as MapEndpoint
from pydp.net import Link, NetHost, netns_create, netns_delete, netns_list, sysctl, veth_name
from pydp.store import Store

__all__ = ["Desired", "Reconciler", "crashpoint", "endpoint_owner", "network_owner"]

log = logging.getLogger(__name__)

CRASH_ENV = "PYDP_CRASH_AT"  # tests: SIGKILL ourselves at the named point


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

    @classmethod
    def read(cls, store: Store) -> Desired:
        with store.transaction() as t:
            nets = [Network.from_json(e.value) for e in t.list(NETWORKS)]
            eps = [Endpoint.from_json(e.value) for e in t.list(ENDPOINTS)]
            sbs = [Sandbox.from_json(e.value) for e in t.list(SANDBOXES)]
        return cls({n.id: n for n in nets}, eps, {s.name: s for s in sbs})

    def bridges(self) -> dict[str, Network]:
        """Bridge networks by bridge name."""
        return {
            BridgeDriver.bridge_name(n): n for n in self.networks.values() if n.driver == "bridge"
        }

    def wired(self) -> list[tuple[Endpoint, Network, Sandbox]]:
        """Endpoints that need a veth: bridge networks, sandboxes with a namespace."""
        out = []
        for ep in self.endpoints:
            net, sb = self.networks.get(ep.network_id), self.sandboxes.get(ep.sandbox)
            if net and sb and sb.netns and net.driver == "bridge" and ep.address is not None:
                out.append((ep, net, sb))
        return sorted(out, key=lambda x: (x[2].name, x[0].ifname))


class Reconciler:
    """Converges this host's kernel (the calling thread's netns) to the store."""

    def __init__(self, store: Store, netns_prefix: str, bpffs: Path | None = None) -> None:
        self.store = store
        self.netns_prefix = netns_prefix
        self.bpffs = bpffs

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

    def run(self) -> Desired:
        """One pass: namespaces, bridges, endpoints, then everything stale."""
        desired = Desired.read(self.store)
        with NetHost() as host:
            self._sandboxes(desired)
            self._bridges(host, desired)
            crashpoint("reconcile:after-bridges")
            with Datapath(root=self.bpffs) as dp:
                self._endpoints(host, desired, dp)
                self._stale(host, desired)
        return desired

    def _sandboxes(self, d: Desired) -> None:
        for sb in d.sandboxes.values():
            if sb.netns is not None:
                netns_create(sb.netns)
                # IPv4-only networks, as Docker's without --ipv6: no IPv6 on new interfaces
                # (no link-local addresses, no DAD and MLD flooding the bridge)
                for scope in ("all", "default"):
                    sysctl(f"net.ipv6.conf.{scope}.disable_ipv6", "1", sb.netns)
                with NetHost(sb.netns) as ns:
                    ns.set_up("lo")

    def _bridges(self, host: NetHost, d: Desired) -> None:
        for name, net in d.bridges().items():
            mtu = BridgeDriver.mtu(net)
            bridge = host.ensure_bridge(name, network_owner(net), mtu)
            assert net.pool is not None
            host.ensure_address(name, IPNetwork(f"{net.pool.gateway}/{net.pool.subnet.prefixlen}"))
            parent = net.options.get(PARENT)
            if parent is not None:  # the user's underlay port: enslaved, never owned
                host.adjust(host.require(parent, f"enslave {parent} to {name}"), master=bridge)

    def _endpoints(self, host: NetHost, d: Desired, dp: Datapath) -> None:
        wanted: dict[IPAddress, MapEndpoint] = {}
        by_sandbox: dict[str, list[tuple[Endpoint, Network]]] = {}
        for ep, net, sb in d.wired():
            by_sandbox.setdefault(sb.name, []).append((ep, net))
        for name, eps in by_sandbox.items():
            netns = d.sandboxes[name].netns
            assert netns is not None
            with NetHost(netns) as ns:
                for ep, net in eps:
                    link = self._wire(host, ns, ep, net)
                    dp.ensure_attached(link.ifindex)
                    assert ep.address is not None and ep.mac is not None
                    wanted[ep.address] = MapEndpoint(link.ifindex, ep.mac, net.index)
                crashpoint("reconcile:after-veth")
                self._default_route(ns, eps)
        dp.sync_endpoints(wanted)

    @staticmethod
    def _wire(host: NetHost, ns: NetHost, ep: Endpoint, net: Network) -> Link:
        assert ep.address is not None and net.pool is not None
        link = host.ensure_veth(
            veth_name(ep.id),
            endpoint_owner(ep),
            ep.ifname,
            ns,
            peer_mac=ep.mac,
            mtu=BridgeDriver.mtu(net),
            master=BridgeDriver.bridge_name(net),
        )
        sysctl(f"net.ipv6.conf.{link.name}.disable_ipv6", "1")  # the host side carries IPv4 only
        ns.ensure_address(ep.ifname, IPNetwork(f"{ep.address}/{net.pool.subnet.prefixlen}"))
        return link

    @staticmethod
    def _default_route(ns: NetHost, eps: list[tuple[Endpoint, Network]]) -> None:
        """The default route goes via the gateway of the sandbox's lowest interface."""
        ep, net = min(eps, key=lambda x: int(x[0].ifname.removeprefix("eth") or 0))
        assert net.pool is not None
        ns.ensure_default_route(net.pool.container_gateway, ep.ifname)

    def _stale(self, host: NetHost, d: Desired) -> None:
        owners = {endpoint_owner(ep) for ep in d.endpoints}
        owners |= {network_owner(n) for n in d.networks.values()}
        for link in host.owned_links("pydp:ep/"):
            if link.owner not in owners:
                host.delete_link(link.name)
        for link in host.owned_links("pydp:net/"):
            if link.owner not in owners:
                host.delete_link(link.name)
        wanted_ns = {sb.netns for sb in d.sandboxes.values() if sb.netns}
        for name in netns_list(self.netns_prefix):
            if name not in wanted_ns:
                netns_delete(name)
        prune_links(self.bpffs)

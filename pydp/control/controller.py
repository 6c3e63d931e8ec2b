"""The control layer's operations: each validates its input and changes the store in one
transaction, or raises and changes nothing. No kernel here: the reconciler follows.

Every controller acts for one node (``node``); several nodes share one store (see
``pydp.control.model`` for the keys and what each node sees). Services' parsing and rules
live in ``pydp.control.services``, store reads in ``pydp.control._reads``, VNI claims in
``pydp.control._vni``; their transactions here."""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ParamSpec, TypeVar

from netaddr import IPAddress, IPNetwork

from pydp.control import _vni, mesh, nodes
from pydp.control._reads import (
    drop_backends,
    endpoints,
    find_network,
    find_sandbox,
    find_service,
    network_addresses,
    networks,
    overlapping_addresses,
    published,
    resolve,
    services,
    used_addresses,
    visible_networks,
    visible_services,
)
from pydp.control.driver import DRIVERS, Driver, OverlayDriver, driver_for
from pydp.control.ipam import Pool, default_global_pools, parse_address, parse_pool
from pydp.control.model import (
    GLOBAL,
    LOCAL,
    MESH_SANDBOX,
    SANDBOXES,
    SETTINGS,
    Endpoint,
    Network,
    Node,
    Sandbox,
    Service,
    ServicePort,
    Settings,
    endpoint_key,
    mac_for,
    network_key,
    new_id,
    sandbox_key,
    service_key,
)
from pydp.control.ports import PortMapping, check_conflicts
from pydp.control.services import (
    BackendRef,
    check_network,
    check_table,
    choose_vip,
    free_index,
    parse_backend,
    parse_spec,
    publish_mappings,
    update_backends,
)
from pydp.errors import ConfigError, ConflictError, NotFoundError
from pydp.store import TXN_ATTEMPTS, Store, Txn, TxnConflictError

__all__ = ["OVERLAY_MAX_PREFIX", "PREDEFINED", "Controller"]

PREDEFINED = ("bridge", "host", "none")  # Docker's networks, created on first use on each node
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
_MAX_IFACES = 64  # eth0 .. eth63 in one sandbox
XDP_MODES = ("auto", "on", "off")
EPHEMERAL = (49153, 65536)  # host ports chosen for -p CONTAINER_PORT, as Docker's
OVERLAY_MAX_PREFIX = 29  # an overlay's subnet: a /29 at least (a gateway, containers on nodes)


def _check_name(what: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f'{what} name "{name}": expected 1-64 characters of [a-zA-Z0-9_.-], starting with'
            " a letter or digit"
        )
    return name


def _free_index(used: set[int]) -> int:
    return next(i for i in range(1, len(used) + 2) if i not in used)


P = ParamSpec("P")
R = TypeVar("R")


def _retried(operation: Callable[P, R]) -> Callable[P, R]:
    """Run the operation again (up to TXN_ATTEMPTS runs, after a short random pause) when
    an optimistic store (etcd) finds at commit that something its transaction read had
    changed meanwhile, as another node wrote: nothing was written, and the next run reads
    and decides afresh. (Operations call no other retried one, so runs never multiply.)"""

    @functools.wraps(operation)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 1
        while True:
            try:
                return operation(*args, **kwargs)
            except TxnConflictError:
                if attempt >= TXN_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.01 * attempt))
                attempt += 1

    return run


class Controller:
    """Networks, sandboxes, their endpoints and services over a Store (libnetwork's
    controller), acting for one node of the cluster sharing the store.

    ``node`` is this node's name (default ``$PYDP_NODE``, else the host name);
    ``netns_prefix`` names the namespaces of this host's sandboxes, so that several
    pydp hosts on one machine never share one.
    """

    def __init__(
        self,
        store: Store,
        netns_prefix: str = "pydp-",
        precheck: Callable[[Network], None] | None = None,
        node: str | None = None,
    ) -> None:
        self.store = store
        self.netns_prefix = netns_prefix
        self.precheck = precheck  # the kernel's say on a new network, before it is stored
        self.node = nodes.node_name(node)

    # nodes --------------------------------------------------------------------------------
    def register_node(
        self,
        name: str | None = None,
        address: IPAddress | str | None = None,
        lease: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Node:
        """Register a node (default: this one) at ``/nodes/NAME``, kept alive by ``lease``
        (the store's lease id) when given: the agent's, at start."""
        return nodes.register(self.store, name or self.node, address, lease, labels)

    @_retried
    def ensure_mesh(self) -> tuple[list[Endpoint], list[Endpoint]]:
        """This node's routing-mesh addresses, one on every overlay network with a
        published service (see ``pydp.control.mesh``): (added, removed)."""
        if not self.node:
            return [], []
        with self.store.transaction() as t:
            return mesh.ensure(t, self.node)

    def nodes(self) -> list[Node]:
        """The registered nodes (their key exists: ready), by name."""
        return nodes.registered(self.store)

    @_retried
    def node_names(self) -> list[str]:
        """Every node the store knows of: registered, or holding networks or sandboxes
        (a node whose lease ended), and this one; sorted."""
        with self.store.transaction() as t:
            named = {n.node for n in networks(t)}
            named |= {Sandbox.from_json(e.value).node for e in t.list(SANDBOXES)}
        named |= {n.name for n in self.nodes()}
        return sorted({n for n in named if n is not None} | {self.node})

    # networks -----------------------------------------------------------------------------
    @_retried
    def ensure_defaults(self) -> None:
        """Create Docker's predefined networks (bridge, host, none) of this node where
        missing: every node has its own."""
        self._ensure_defaults()

    def _ensure_defaults(self) -> None:
        with self.store.transaction() as t:
            names = {n.name for n in visible_networks(t, self.node)}
            if "bridge" not in names:
                self._add_network(t, "bridge", "bridge", parse_pool("172.17.0.0/16"), {}, {})
            if "host" not in names:
                self._add_network(t, "host", "host", None, {}, {})
            if "none" not in names:
                self._add_network(t, "none", "null", None, {}, {})

    @_retried
    def create_network(
        self,
        name: str,
        driver: str = "bridge",
        subnet: str | None = None,
        ip_range: str | None = None,
        gateway: str | None = None,
        aux: Sequence[str] = (),
        options: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Network:
        """``network create``: validate everything, then store the network; a global one
        (overlay) with its VNI, claimed in the same transaction."""
        _check_name("network", name)
        drv = driver_for(driver)
        opts = drv.validate_options(options or {})
        self._ensure_defaults()
        addrs = (subnet, ip_range, gateway, tuple(aux))
        if drv.scope != GLOBAL:
            with self.store.transaction() as t:
                self._check_network_name(t, name, drv.scope)
                pool = self._local_pool(t, drv, addrs)
                return self._add_network(t, name, driver, pool, opts, labels or {})
        wanted = OverlayDriver.requested_vni(opts)
        claims = _vni.Claims(self.store, wanted)
        for vni in claims:
            try:
                with self.store.transaction() as t:
                    self._check_network_name(t, name, GLOBAL)
                    pool = self._global_pool(t, addrs)
                    return self._add_network(t, name, driver, pool, opts, labels or {}, vni)
            except _vni.Taken:
                claims.taken(vni)
            except TxnConflictError:
                claims.conflict()
        raise claims.exhausted(name)

    def _check_network_name(self, t: Txn, name: str, scope: str) -> None:
        """A name is this node's once: local networks here and global ones; a global
        network's name must be free on every node."""
        clashes = [n for n in networks(t) if n.name == name]
        if any(n.visible_on(self.node) for n in clashes):
            raise ConflictError(f"network with name {name} already exists")
        if scope == GLOBAL and clashes:
            where = sorted({n.node or "" for n in clashes})
            raise ConflictError(
                f"network with name {name} already exists on node{'s' * (len(where) > 1)}"
                f" {', '.join(where)} (a global network's name must be free on every node)"
            )

    def _local_pool(
        self, t: Txn, drv: Driver, addrs: tuple[str | None, str | None, str | None, tuple[str, ...]]
    ) -> Pool | None:
        """A local network's addresses: clear of every subnet this node sees."""
        subnet, ip_range, gateway, aux = addrs
        if not drv.uses_ipam:
            if subnet or ip_range or gateway or aux:
                raise ConfigError(f"--subnet: the {drv.name} driver takes no addresses")
            return None
        seen = visible_networks(t, self.node)
        taken = {n.name: n.pool.subnet for n in seen if n.pool is not None}
        return parse_pool(subnet, ip_range, gateway, aux, taken)

    def _global_pool(
        self, t: Txn, addrs: tuple[str | None, str | None, str | None, tuple[str, ...]]
    ) -> Pool:
        """A global network's addresses: chosen, a /24 of 10.0.0.0/8 clear of every network
        of every node; given, clear of every node's local networks (overlays may overlap
        each other, as Docker's: the VNI keeps them apart)."""
        subnet, ip_range, gateway, aux = addrs
        nets = [n for n in networks(t) if n.pool is not None]
        if subnet is None:
            taken = {n.name: n.pool.subnet for n in nets if n.pool is not None}
            return parse_pool(None, ip_range, gateway, aux, taken, default_global_pools())
        pool = parse_pool(subnet, ip_range, gateway, aux)
        if pool.subnet.prefixlen > OVERLAY_MAX_PREFIX:
            raise ConfigError(
                f"--subnet: an overlay network needs a /{OVERLAY_MAX_PREFIX} or larger"
                f' (a gateway and containers on several nodes), got "{subnet}"'
            )
        for n in nets:
            assert n.pool is not None
            other = n.pool.subnet
            if (
                n.scope == LOCAL
                and pool.subnet.first <= other.last
                and other.first <= pool.subnet.last
            ):
                raise ConflictError(
                    f'--subnet: {pool.subnet} overlaps network "{n.name}" ({other})'
                    f" on node {n.node or self.node}"
                )
        return pool

    def _add_network(
        self,
        t: Txn,
        name: str,
        driver: str,
        pool: Pool | None,
        options: Mapping[str, str],
        labels: Mapping[str, str],
        vni: int | None = None,
    ) -> Network:
        """Store a network of this node (local) or of every node (global): its index is
        free among the networks each node that sees it sees; a VNI is claimed with it."""
        drv = DRIVERS[driver]
        seen = visible_networks(t, self.node)
        if drv.scope == GLOBAL:
            index, node = _free_index({n.index for n in networks(t)}), None
        else:
            index, node = _free_index({n.index for n in seen}), self.node
        net = Network(
            new_id(), name, driver, index, pool, options, labels, time.time(), drv.scope, node, vni
        )
        drv.check_coexistence(net, seen)
        if self.precheck is not None:
            self.precheck(net)
        if vni is not None:
            _vni.claim(t, vni, net, explicit=OverlayDriver.requested_vni(options) is not None)
        t.put(network_key(net.id), net.to_json())
        return net

    @_retried
    def networks(self, all_nodes: bool = False) -> list[Network]:
        """The networks this node sees, its defaults made if missing; ``all_nodes``: every
        node's, as they are."""
        if not all_nodes:
            self._ensure_defaults()
        with self.store.transaction() as t:
            nets = networks(t) if all_nodes else visible_networks(t, self.node)
            return sorted(nets, key=lambda n: (n.name, n.node or ""))

    @_retried
    def network(self, ref: str) -> Network:
        """A network this node sees, by name, id or unique id prefix."""
        self._ensure_defaults()
        with self.store.transaction() as t:
            return find_network(t, ref, self.node)

    @_retried
    def remove_network(self, ref: str) -> Network:
        """``network rm``: refused while endpoints (on any node) or services remain, and for
        predefined networks; a VNI returns to the cluster."""
        with self.store.transaction() as t:
            net = find_network(t, ref, self.node)
            if net.name in PREDEFINED:
                raise ConflictError(
                    f"network {net.name} is a pre-defined network and cannot be removed"
                )
            eps = [e for e in endpoints(t, net.id) if not mesh.is_mesh(e)]
            if eps:
                users = ", ".join(sorted({e.sandbox for e in eps}))
                raise ConflictError(f"network {net.name} has active endpoints ({users})")
            svcs = services(t, net.id)
            if svcs:
                names = ", ".join(sorted(s.name for s in svcs))
                raise ConflictError(f"network {net.name} has services ({names})")
            self._delete_network(t, net)
            return net

    @staticmethod
    def _delete_network(t: Txn, net: Network) -> None:
        """The network, its VNI, and the mesh addresses of nodes gone before they let go."""
        for ep in endpoints(t, net.id):
            t.delete(endpoint_key(net.id, ep.id))
        t.delete(network_key(net.id))
        if net.vni is not None:
            _vni.release(t, net.vni)

    @_retried
    def prune(self) -> list[Network]:
        """``network prune``: remove every user network this node sees (its own, and global
        ones) without endpoints on any node or services."""
        with self.store.transaction() as t:
            gone = []
            for net in visible_networks(t, self.node):
                used = [e for e in endpoints(t, net.id) if not mesh.is_mesh(e)]
                if net.name in PREDEFINED or used or services(t, net.id):
                    continue
                self._delete_network(t, net)
                gone.append(net)
            return sorted(gone, key=lambda n: n.name)

    # settings -----------------------------------------------------------------------------
    def settings(self) -> Settings:
        entry = self.store.get(SETTINGS)
        return Settings() if entry is None else Settings.from_json(entry.value)

    @_retried
    def configure(self, nat_ports: str | None = None, xdp: str | None = None) -> Settings:
        """``system config``: change host-wide settings; unchanged ones stay."""
        if xdp is not None and xdp not in XDP_MODES:
            raise ConfigError(f'--xdp: expected {", ".join(XDP_MODES)}, got "{xdp}"')
        with self.store.transaction() as t:
            entry = t.get(SETTINGS)
            cur = Settings() if entry is None else Settings.from_json(entry.value)
            ports = cur.nat_ports if nat_ports is None else _port_range("--nat-ports", nat_ports)
            cur = Settings(ports, cur.xdp if xdp is None else xdp)
            t.put(SETTINGS, cur.to_json())
            return cur

    # sandboxes ----------------------------------------------------------------------------
    @_retried
    def create_sandbox(self, name: str | None = None, host: bool = False) -> Sandbox:
        """``sandbox create``: a named network namespace (``host``: the host's own) on this
        node; its name is unique in the cluster."""
        with self.store.transaction() as t:
            return self._create_sandbox(t, name, host)

    def _create_sandbox(self, t: Txn, name: str | None, host: bool) -> Sandbox:
        sid = new_id()
        name = _check_name("sandbox", name or f"sb-{sid[:12]}")
        if name == MESH_SANDBOX:
            raise ConfigError(f"sandbox name {name} is reserved for the routing mesh")
        entry = t.get(sandbox_key(name))
        if entry is not None:
            other = Sandbox.from_json(entry.value)
            if other.local_to(self.node):
                raise ConflictError(f"sandbox {name} already exists")
            raise ConflictError(f"sandbox {name} exists on node {other.node}")
        netns = None if host else f"{self.netns_prefix}{name}"
        sb = Sandbox(name, sid, netns, time.time(), self.node)
        t.put(sandbox_key(name), sb.to_json())
        return sb

    @_retried
    def run_sandbox(
        self,
        name: str | None,
        network: str,
        ip: str | None = None,
        ports: Sequence[PortMapping] = (),
    ) -> tuple[Sandbox, Endpoint]:
        """``run``: a new sandbox on this node connected to network, its ports published, in
        one transaction (all or nothing)."""
        self._ensure_defaults()
        with self.store.transaction() as t:
            net = find_network(t, network, self.node)
            sb = self._create_sandbox(t, name, host=net.driver == "host")
            return sb, self._connect(t, net, sb, ip, ports)

    @_retried
    def sandboxes(self) -> list[Sandbox]:
        """The sandboxes of every node, by name."""
        with self.store.transaction() as t:
            return [Sandbox.from_json(e.value) for e in t.list(SANDBOXES)]

    @_retried
    def sandbox(self, name: str) -> Sandbox:
        """A sandbox of any node."""
        with self.store.transaction() as t:
            return find_sandbox(t, name)

    def local_sandbox(self, name: str) -> Sandbox:
        """A sandbox of this node: what commands run in (``exec``) must be here."""
        sb = self.sandbox(name)
        if not sb.local_to(self.node):
            raise ConflictError(f"sandbox {name} runs on node {sb.node}")
        return sb

    @_retried
    def remove_sandbox(self, name: str) -> Sandbox:
        """``sandbox rm``: the sandbox and every endpoint it holds, its backends out of
        their services. A sandbox of another node goes from the store at once; that node's
        agent then removes its namespace and processes."""
        with self.store.transaction() as t:
            sb = find_sandbox(t, name)
            for ep in endpoints(t):
                if ep.sandbox == name:
                    t.delete(endpoint_key(ep.network_id, ep.id))
            drop_backends(t, name)
            t.delete(sandbox_key(name))
            return sb

    # endpoints ----------------------------------------------------------------------------
    @_retried
    def connect(self, network: str, sandbox: str, ip: str | None = None) -> Endpoint:
        """``network connect``: a new endpoint of network in sandbox (address from IPAM).
        The network is found as this node sees it and must exist on the sandbox's node: a
        sandbox of another node joins global networks only."""
        self._ensure_defaults()
        with self.store.transaction() as t:
            net = find_network(t, network, self.node)
            sb = find_sandbox(t, sandbox)
            where = sb.node or self.node
            if not net.visible_on(where):
                raise ConflictError(
                    f"network {net.name} is local to node {net.node}; sandbox {sb.name} runs"
                    f" on node {where}"
                )
            return self._connect(t, net, sb, ip)

    def _connect(
        self,
        t: Txn,
        net: Network,
        sb: Sandbox,
        ip: str | None,
        ports: Sequence[PortMapping] = (),
    ) -> Endpoint:
        mine = [e for e in endpoints(t) if e.sandbox == sb.name]
        if any(e.network_id == net.id for e in mine):
            raise ConflictError(f"sandbox {sb.name} is already connected to network {net.name}")
        self._check_mode(net, sb, mine, t)
        drv = DRIVERS[net.driver]
        addr = None
        if drv.uses_ipam and net.pool is not None:
            used = used_addresses(t, net)
            owner = f"network {net.name}"
            if ip is not None:
                addr = net.pool.check_static(parse_address("--ip", ip), used, owner)
            else:
                addr = net.pool.allocate(used, owner)
        elif ip is not None:
            raise ConfigError(f"--ip: network {net.name} ({net.driver}) takes no addresses")
        ifname = self._next_ifname(mine) if drv.has_interfaces else ""
        mac = None if addr is None else mac_for(addr)
        chosen = self._publish(t, net, ports, sb.node or self.node) if ports else ()
        ep = Endpoint(
            new_id(), net.id, sb.name, ifname, addr, mac, time.time(), chosen, node=sb.node
        )
        t.put(endpoint_key(net.id, ep.id), ep.to_json())
        return ep

    @staticmethod
    def _publish(
        t: Txn, net: Network, ports: Sequence[PortMapping], node: str
    ) -> tuple[PortMapping, ...]:
        """Check the requested ports against every one published on the node and choose
        the free host ports asked for with 0 (Docker's range, 49153-65535, lowest first)."""
        if net.pool is None:
            raise ConfigError(f"--publish: network {net.name} ({net.driver}) has no addresses")
        taken_ports = published(t, node)
        check_conflicts(ports, taken_ports)
        taken = {(p.proto, p.host_port) for p in [*taken_ports, *ports]}
        out = []
        for pm in ports:
            if pm.host_port == 0:
                free = next((n for n in range(*EPHEMERAL) if (pm.proto, n) not in taken), None)
                if free is None:
                    raise ConflictError(f"--publish: no free host port left for {pm}")
                pm = PortMapping(pm.host_ip, free, pm.container_port, pm.proto)
                taken.add((pm.proto, free))
            out.append(pm)
        return tuple(out)

    @staticmethod
    def _check_mode(net: Network, sb: Sandbox, mine: Sequence[Endpoint], t: Txn) -> None:
        if (net.driver == "host") != (sb.netns is None):
            raise ConflictError(
                f"sandbox {sb.name}: the host network and other networks cannot be combined"
            )
        nets = {n.id: n for n in networks(t)}
        if any(nets[e.network_id].driver == "null" for e in mine) or (
            net.driver == "null" and mine
        ):
            raise ConflictError(f"sandbox {sb.name}: the none network cannot be combined")

    @staticmethod
    def _next_ifname(mine: Sequence[Endpoint]) -> str:
        taken = {e.ifname for e in mine}
        for i in range(_MAX_IFACES):
            if f"eth{i}" not in taken:
                return f"eth{i}"
        raise ConflictError(f"sandbox has {_MAX_IFACES} interfaces already")

    @_retried
    def disconnect(self, network: str, sandbox: str) -> Endpoint:
        """``network disconnect``: remove the sandbox's endpoint of network."""
        with self.store.transaction() as t:
            net = find_network(t, network, self.node)
            sb = find_sandbox(t, sandbox)
            for ep in endpoints(t, net.id):
                if ep.sandbox == sb.name:
                    t.delete(endpoint_key(net.id, ep.id))
                    drop_backends(t, sb.name, net.id)
                    return ep
            raise NotFoundError(f"sandbox {sb.name} is not connected to network {net.name}")

    @_retried
    def endpoints(self, network: str | None = None) -> list[Endpoint]:
        """The endpoints, on every node, of a network this node sees, or of every network."""
        with self.store.transaction() as t:
            nid = None if network is None else find_network(t, network, self.node).id
            return endpoints(t, nid)

    def subnets(self) -> dict[str, IPNetwork]:
        return {n.name: n.pool.subnet for n in self.networks() if n.pool is not None}

    # services -----------------------------------------------------------------------------
    @_retried
    def create_service(
        self,
        name: str,
        network: str,
        ports: Sequence[str | ServicePort],
        vip: str | IPAddress | None = None,
        mode: str = "vip",
        publish: Sequence[str | tuple[int, ServicePort]] = (),
        backends: Sequence[str | BackendRef] = (),
        lb: str = "maglev",
        maglev_size: str | int | None = None,
    ) -> Service:
        """``service create``: a VIP (given, or the pool's next free address; none in dnsrr
        mode), ports, published ports and backends, checked, then stored. A service is as
        global as its network: on an overlay its index and published ports are clear of
        every node's, on a bridge of this node's."""
        _check_name("service", name)
        spec = parse_spec(ports, vip, mode, publish, lb, maglev_size)
        refs = [parse_backend(b) for b in backends]
        self._ensure_defaults()
        with self.store.transaction() as t:
            self._check_service_name(t, name)
            net = find_network(t, network, self.node)
            check_network(net)
            every = net.scope == GLOBAL
            addr = None
            if spec.mode == "vip":
                own, taken = network_addresses(t, net), overlapping_addresses(t, net)
                if spec.vip is not None and spec.vip not in own and spec.vip in taken:
                    raise ConflictError(
                        f"--vip: {spec.vip} is in use in {taken[spec.vip]}, whose subnet"
                        f" overlaps {net.name}'s: a VIP must be free in both"
                    )
                addr = choose_vip(net, spec.vip, own | set(taken))
            new_vip = {} if addr is None else {addr: name}
            found = resolve(t, "--backend", refs, net, self.node, new_vip)
            check_conflicts(
                publish_mappings(spec.publish), published(t, None if every else self.node)
            )
            seen = services(t) if every else visible_services(t, self.node)
            svc = Service(
                new_id(),
                name,
                net.id,
                free_index({s.index for s in seen}),
                addr,
                spec.ports,
                spec.mode,
                spec.publish,
                found,
                spec.lb,
                spec.maglev_size,
                time.time(),
            )
            check_table(svc)
            t.put(service_key(svc.id), svc.to_json())
            return svc

    def _check_service_name(self, t: Txn, name: str) -> None:
        """Service names are unique in the cluster."""
        nets = {n.id: n for n in networks(t)}
        for s in services(t):
            if s.name == name:
                net = nets.get(s.network_id)
                if net is None or net.visible_on(self.node):
                    raise ConflictError(f"service {name} already exists")
                raise ConflictError(f"service {name} exists on node {net.node}")

    @_retried
    def services(self) -> list[Service]:
        """The services this node sees (of the networks it sees), by name."""
        with self.store.transaction() as t:
            return sorted(visible_services(t, self.node), key=lambda s: s.name)

    @_retried
    def service(self, ref: str) -> Service:
        """A service this node sees, by name, id or unique id prefix."""
        with self.store.transaction() as t:
            return find_service(t, ref, self.node)

    @_retried
    def remove_service(self, ref: str) -> Service:
        """``service rm``: the service goes, its VIP and index return to their pools."""
        with self.store.transaction() as t:
            svc = find_service(t, ref, self.node)
            t.delete(service_key(svc.id))
            return svc

    @_retried
    def update_service(
        self,
        ref: str,
        add: Sequence[str | BackendRef] = (),
        remove: Sequence[str | BackendRef] = (),
        weights: Mapping[str, int] | Mapping[BackendRef, int] | None = None,
        drain: bool = False,
    ) -> Service:
        """``service update``: remove backends (``drain``: kept as draining, their live
        connections left alone), add backends, set weights; all or nothing."""
        adds = [parse_backend(b, "--backend-add") for b in add]
        rms = [parse_backend(b, "--backend-rm", existing=True) for b in remove]
        ws = [(parse_backend(b, "--weight", True), w) for b, w in (weights or {}).items()]
        if drain and not rms:
            raise ConfigError("--drain: only with --backend-rm")
        with self.store.transaction() as t:
            svc = find_service(t, ref, self.node)
            net = find_network(t, svc.network_id, self.node)
            found = resolve(t, "--backend-add", adds, net, self.node)
            new = dataclasses.replace(svc, backends=update_backends(svc, found, rms, ws, drain))
            check_table(new)
            if new != svc:
                t.put(service_key(new.id), new.to_json())
            return new


def _port_range(flag: str, text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not (sep and lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 65535):
        raise ConfigError(f'{flag}: expected FIRST-LAST, ports 1-65535, got "{text}"')
    return int(lo), int(hi)

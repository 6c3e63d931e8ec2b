"""The control layer's operations: each validates its input and changes the store in one
transaction, or raises and changes nothing. No kernel here: the reconciler follows.

Services' parsing and rules live in ``pydp.control.services``; their transactions here."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence

from netaddr import IPAddress, IPNetwork

from pydp.control.driver import DRIVERS, driver_for
from pydp.control.ipam import Pool, parse_address, parse_pool
from pydp.control.model import (
    ENDPOINTS,
    NETWORKS,
    SANDBOXES,
    SERVICES,
    SETTINGS,
    Endpoint,
    Network,
    Sandbox,
    Service,
    ServiceBackend,
    ServicePort,
    Settings,
    endpoint_key,
    endpoint_prefix,
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
    resolve_backends,
    update_backends,
)
from pydp.errors import ConfigError, ConflictError, NotFoundError
from pydp.store import Store, Txn

__all__ = ["PREDEFINED", "Controller"]

PREDEFINED = ("bridge", "host", "none")  # Docker's networks, created on first use
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
_MAX_IFACES = 64  # eth0 .. eth63 in one sandbox
XDP_MODES = ("auto", "on", "off")
EPHEMERAL = (49153, 65536)  # host ports chosen for -p CONTAINER_PORT, as Docker's


def _check_name(what: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f'{what} name "{name}": expected 1-64 characters of [a-zA-Z0-9_.-], starting with'
            " a letter or digit"
        )
    return name


def _networks(t: Txn) -> list[Network]:
    return [Network.from_json(e.value) for e in t.list(NETWORKS)]


def _find_network(t: Txn, ref: str) -> Network:
    nets = _networks(t)
    for n in nets:
        if n.name == ref or n.id == ref:
            return n
    matches = [n for n in nets if len(ref) >= 3 and n.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    raise NotFoundError(f"network {ref} not found")


def _find_sandbox(t: Txn, name: str) -> Sandbox:
    e = t.get(sandbox_key(name))
    if e is None:
        raise NotFoundError(f"sandbox {name} not found")
    return Sandbox.from_json(e.value)


def _endpoints(t: Txn, network_id: str | None = None) -> list[Endpoint]:
    prefix = ENDPOINTS if network_id is None else endpoint_prefix(network_id)
    return [Endpoint.from_json(e.value) for e in t.list(prefix)]


def _services(t: Txn, network_id: str | None = None) -> list[Service]:
    svcs = [Service.from_json(e.value) for e in t.list(SERVICES)]
    return [s for s in svcs if network_id is None or s.network_id == network_id]


def _find_service(t: Txn, ref: str) -> Service:
    svcs = _services(t)
    for s in svcs:
        if s.name == ref or s.id == ref:
            return s
    matches = [s for s in svcs if len(ref) >= 3 and s.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    raise NotFoundError(f"service {ref} not found")


def _used_addresses(t: Txn, net: Network) -> set[IPAddress]:
    """The network's addresses in use: its endpoints' and its services' VIPs."""
    used = {e.address for e in _endpoints(t, net.id) if e.address is not None}
    return used | {s.vip for s in _services(t, net.id) if s.vip is not None}


def _published(t: Txn) -> list[PortMapping]:
    """Every published host port: containers' (-p) and services' (--publish)."""
    return [
        *(p for e in _endpoints(t) for p in e.ports),
        *(p for s in _services(t) for p in publish_mappings(s.publish)),
    ]


def _resolve(
    t: Txn,
    flag: str,
    refs: Sequence[BackendRef],
    net: Network,
    new_vip: Mapping[IPAddress, str] | None = None,
) -> tuple[ServiceBackend, ...]:
    """Backends as given, resolved against net's endpoints; no backend may be a VIP."""
    vips = {s.vip: s.name for s in _services(t) if s.vip is not None} | dict(new_vip or {})
    sandboxes = {e.key.removeprefix(SANDBOXES) for e in t.list(SANDBOXES)}
    return resolve_backends(flag, refs, net, _endpoints(t, net.id), sandboxes, vips)


def _drop_backends(t: Txn, sandbox: str, network_id: str | None = None) -> None:
    """A sandbox leaves (or leaves a network): its backends leave the services there, at
    once and with their connections (not draining)."""
    for svc in _services(t, network_id):
        kept = tuple(b for b in svc.backends if b.sandbox != sandbox)
        if kept != svc.backends:
            t.put(service_key(svc.id), dataclasses.replace(svc, backends=kept).to_json())


class Controller:
    """Networks, sandboxes, their endpoints and services over a Store (libnetwork's
    controller).

    ``netns_prefix`` names the namespaces of this host's sandboxes, so that several
    pydp hosts on one machine never share one.
    """

    def __init__(
        self,
        store: Store,
        netns_prefix: str = "pydp-",
        precheck: Callable[[Network], None] | None = None,
    ) -> None:
        self.store = store
        self.netns_prefix = netns_prefix
        self.precheck = precheck  # the kernel's say on a new network, before it is stored

    # networks -----------------------------------------------------------------------------
    def ensure_defaults(self) -> None:
        """Create Docker's predefined networks (bridge, host, none) where missing."""
        with self.store.transaction() as t:
            names = {n.name for n in _networks(t)}
            if "bridge" not in names:
                self._add_network(t, "bridge", "bridge", parse_pool("172.17.0.0/16"), {}, {})
            if "host" not in names:
                self._add_network(t, "host", "host", None, {}, {})
            if "none" not in names:
                self._add_network(t, "none", "null", None, {}, {})

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
        """``network create``: validate everything, then store the network."""
        _check_name("network", name)
        drv = driver_for(driver)
        opts = drv.validate_options(options or {})
        self.ensure_defaults()
        with self.store.transaction() as t:
            nets = _networks(t)
            if any(n.name == name for n in nets):
                raise ConflictError(f"network with name {name} already exists")
            pool = None
            if drv.uses_ipam:
                taken = {n.name: n.pool.subnet for n in nets if n.pool is not None}
                pool = parse_pool(subnet, ip_range, gateway, aux, taken)
            elif subnet or ip_range or gateway or aux:
                raise ConfigError(f"--subnet: the {driver} driver takes no addresses")
            return self._add_network(t, name, driver, pool, opts, labels or {})

    def _add_network(
        self,
        t: Txn,
        name: str,
        driver: str,
        pool: Pool | None,
        options: Mapping[str, str],
        labels: Mapping[str, str],
    ) -> Network:
        nets = _networks(t)
        used = {n.index for n in nets}
        index = next(i for i in range(1, len(used) + 2) if i not in used)
        net = Network(new_id(), name, driver, index, pool, options, labels, time.time())
        DRIVERS[driver].check_coexistence(net, nets)
        if self.precheck is not None:
            self.precheck(net)
        t.put(network_key(net.id), net.to_json())
        return net

    def networks(self) -> list[Network]:
        self.ensure_defaults()
        with self.store.transaction() as t:
            return sorted(_networks(t), key=lambda n: n.name)

    def network(self, ref: str) -> Network:
        """A network by name, id or unique id prefix."""
        self.ensure_defaults()
        with self.store.transaction() as t:
            return _find_network(t, ref)

    def remove_network(self, ref: str) -> Network:
        """``network rm``: refused while endpoints remain, and for predefined networks."""
        with self.store.transaction() as t:
            net = _find_network(t, ref)
            if net.name in PREDEFINED:
                raise ConflictError(
                    f"network {net.name} is a pre-defined network and cannot be removed"
                )
            eps = _endpoints(t, net.id)
            if eps:
                users = ", ".join(sorted({e.sandbox for e in eps}))
                raise ConflictError(f"network {net.name} has active endpoints ({users})")
            svcs = _services(t, net.id)
            if svcs:
                names = ", ".join(sorted(s.name for s in svcs))
                raise ConflictError(f"network {net.name} has services ({names})")
            t.delete(network_key(net.id))
            return net

    def prune(self) -> list[Network]:
        """``network prune``: remove every user network without endpoints or services."""
        with self.store.transaction() as t:
            gone = []
            for net in _networks(t):
                if net.name in PREDEFINED or _endpoints(t, net.id) or _services(t, net.id):
                    continue
                t.delete(network_key(net.id))
                gone.append(net)
            return sorted(gone, key=lambda n: n.name)

    # settings -----------------------------------------------------------------------------
    def settings(self) -> Settings:
        entry = self.store.get(SETTINGS)
        return Settings() if entry is None else Settings.from_json(entry.value)

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
    def create_sandbox(self, name: str | None = None, host: bool = False) -> Sandbox:
        """``sandbox create``: a named network namespace (``host``: the host's own)."""
        with self.store.transaction() as t:
            return self._create_sandbox(t, name, host)

    def _create_sandbox(self, t: Txn, name: str | None, host: bool) -> Sandbox:
        sid = new_id()
        name = _check_name("sandbox", name or f"sb-{sid[:12]}")
        if t.get(sandbox_key(name)) is not None:
            raise ConflictError(f"sandbox {name} already exists")
        sb = Sandbox(name, sid, None if host else f"{self.netns_prefix}{name}", time.time())
        t.put(sandbox_key(name), sb.to_json())
        return sb

    def run_sandbox(
        self,
        name: str | None,
        network: str,
        ip: str | None = None,
        ports: Sequence[PortMapping] = (),
    ) -> tuple[Sandbox, Endpoint]:
        """``run``: a new sandbox connected to network, its ports published, in one
        transaction (all or nothing)."""
        self.ensure_defaults()
        with self.store.transaction() as t:
            net = _find_network(t, network)
            sb = self._create_sandbox(t, name, host=net.driver == "host")
            return sb, self._connect(t, net, sb, ip, ports)

    def sandboxes(self) -> list[Sandbox]:
        with self.store.transaction() as t:
            return [Sandbox.from_json(e.value) for e in t.list(SANDBOXES)]

    def sandbox(self, name: str) -> Sandbox:
        with self.store.transaction() as t:
            return _find_sandbox(t, name)

    def remove_sandbox(self, name: str) -> Sandbox:
        """``sandbox rm``: the sandbox and every endpoint it holds."""
        with self.store.transaction() as t:
            sb = _find_sandbox(t, name)
            for ep in _endpoints(t):
                if ep.sandbox == name:
                    t.delete(endpoint_key(ep.network_id, ep.id))
            _drop_backends(t, name)
            t.delete(sandbox_key(name))
            return sb

    # endpoints ----------------------------------------------------------------------------
    def connect(self, network: str, sandbox: str, ip: str | None = None) -> Endpoint:
        """``network connect``: a new endpoint of network in sandbox (address from IPAM)."""
        self.ensure_defaults()
        with self.store.transaction() as t:
            return self._connect(t, _find_network(t, network), _find_sandbox(t, sandbox), ip)

    def _connect(
        self,
        t: Txn,
        net: Network,
        sb: Sandbox,
        ip: str | None,
        ports: Sequence[PortMapping] = (),
    ) -> Endpoint:
        mine = [e for e in _endpoints(t) if e.sandbox == sb.name]
        if any(e.network_id == net.id for e in mine):
            raise ConflictError(f"sandbox {sb.name} is already connected to network {net.name}")
        self._check_mode(net, sb, mine, t)
        drv = DRIVERS[net.driver]
        addr = None
        if drv.uses_ipam and net.pool is not None:
            used = _used_addresses(t, net)
            owner = f"network {net.name}"
            if ip is not None:
                addr = net.pool.check_static(parse_address("--ip", ip), used, owner)
            else:
                addr = net.pool.allocate(used, owner)
        elif ip is not None:
            raise ConfigError(f"--ip: network {net.name} ({net.driver}) takes no addresses")
        ifname = self._next_ifname(mine) if drv.has_interfaces else ""
        mac = None if addr is None else mac_for(addr)
        chosen = self._publish(t, net, ports) if ports else ()
        ep = Endpoint(new_id(), net.id, sb.name, ifname, addr, mac, time.time(), chosen)
        t.put(endpoint_key(net.id, ep.id), ep.to_json())
        return ep

    @staticmethod
    def _publish(t: Txn, net: Network, ports: Sequence[PortMapping]) -> tuple[PortMapping, ...]:
        """Check the requested ports against every published one and choose the free host
        ports asked for with 0 (Docker's range, 49153-65535, lowest first)."""
        if net.pool is None:
            raise ConfigError(f"--publish: network {net.name} ({net.driver}) has no addresses")
        published = _published(t)
        check_conflicts(ports, published)
        taken = {(p.proto, p.host_port) for p in [*published, *ports]}
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
        nets = {n.id: n for n in _networks(t)}
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

    def disconnect(self, network: str, sandbox: str) -> Endpoint:
        """``network disconnect``: remove the sandbox's endpoint of network."""
        with self.store.transaction() as t:
            net = _find_network(t, network)
            sb = _find_sandbox(t, sandbox)
            for ep in _endpoints(t, net.id):
                if ep.sandbox == sb.name:
                    t.delete(endpoint_key(net.id, ep.id))
                    _drop_backends(t, sb.name, net.id)
                    return ep
            raise NotFoundError(f"sandbox {sb.name} is not connected to network {net.name}")

    def endpoints(self, network: str | None = None) -> list[Endpoint]:
        with self.store.transaction() as t:
            nid = None if network is None else _find_network(t, network).id
            return _endpoints(t, nid)

    def subnets(self) -> dict[str, IPNetwork]:
        return {n.name: n.pool.subnet for n in self.networks() if n.pool is not None}

    # services -----------------------------------------------------------------------------
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
        mode), ports, published ports and backends, checked, then stored."""
        _check_name("service", name)
        spec = parse_spec(ports, vip, mode, publish, lb, maglev_size)
        refs = [parse_backend(b) for b in backends]
        self.ensure_defaults()
        with self.store.transaction() as t:
            svcs = _services(t)
            if any(s.name == name for s in svcs):
                raise ConflictError(f"service {name} already exists")
            net = _find_network(t, network)
            check_network(net)
            addr = None
            if spec.mode == "vip":
                addr = choose_vip(net, spec.vip, _used_addresses(t, net))
            found = _resolve(t, "--backend", refs, net, {} if addr is None else {addr: name})
            check_conflicts(publish_mappings(spec.publish), _published(t))
            svc = Service(
                new_id(),
                name,
                net.id,
                free_index({s.index for s in svcs}),
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

    def services(self) -> list[Service]:
        with self.store.transaction() as t:
            return sorted(_services(t), key=lambda s: s.name)

    def service(self, ref: str) -> Service:
        """A service by name, id or unique id prefix."""
        with self.store.transaction() as t:
            return _find_service(t, ref)

    def remove_service(self, ref: str) -> Service:
        """``service rm``: the service goes, its VIP and index return to their pools."""
        with self.store.transaction() as t:
            svc = _find_service(t, ref)
            t.delete(service_key(svc.id))
            return svc

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
            svc = _find_service(t, ref)
            net = _find_network(t, svc.network_id)
            found = _resolve(t, "--backend-add", adds, net)
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

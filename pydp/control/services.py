"""Services: the service flags parsed, and the rules a service's values must keep.

Pure functions over the model's values, as ``ipam`` and ``ports``: no store and no
kernel. The controller reads the store, calls these and writes the result in one
transaction; whether a host process holds a published port is the reconciler's.

Forms (every error names the flag and the accepted form):
``--port PORT[/PROTO]``, ``--publish HOST_PORT:PORT[/PROTO]`` (PORT one of the
service's), ``--backend SANDBOX[:PORT]`` or ``IP:PORT`` (a dotted quad is an
address, anything else a sandbox), ``--weight BACKEND=WEIGHT``, ``--maglev-size M``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from netaddr import IPAddress

from pydp.control.ipam import parse_address
from pydp.control.model import Endpoint, Network, Service, ServiceBackend, ServicePort
from pydp.control.ports import PROTOCOLS, PortMapping
from pydp.errors import ConfigError, ConflictError, NotFoundError

__all__ = [
    "LB_MODES",
    "MAX_INDEX",
    "MAX_WEIGHT",
    "MODES",
    "RANDOM_MAX_SLOTS",
    "SERVICE_DRIVERS",
    "BackendRef",
    "ServiceSpec",
    "check_network",
    "check_table",
    "choose_vip",
    "find_backend",
    "free_index",
    "parse_backend",
    "parse_maglev_size",
    "parse_port",
    "parse_publish",
    "parse_spec",
    "parse_weight",
    "publish_mappings",
    "resolve_backends",
    "update_backends",
]

MODES = ("vip", "dnsrr")
LB_MODES = ("maglev", "random")
SERVICE_DRIVERS = ("bridge", "overlay")  # drivers with IPAM and a datapath
MAX_INDEX = 131071  # service indexes are 1..MAX_INDEX (pydp_lb_tables holds 131072)
MAX_WEIGHT = 0xFFFF_FFFF  # pydp.control.maglev.MAX_WEIGHT (the fill loop's uint32_t)
RANDOM_MAX_SLOTS = 131071  # a random table's slots (one per unit of weight): Maglev's largest

_PORT = re.compile(r"^(?P<port>\d{1,10})(?:/(?P<proto>[a-zA-Z]+))?$")
_PUBLISH = re.compile(r"^(?P<host>\d{1,10}):(?P<port>\d{1,10})(?:/(?P<proto>[a-zA-Z]+))?$")
_BACKEND = re.compile(r"^(?P<host>[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63})(?::(?P<port>\d{1,10}))?$")
_DOTTED = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_BACKEND_FORM = "SANDBOX[:PORT] or IP:PORT"


def _proto(flag: str, text: str, proto: str | None) -> str:
    value = (proto or "tcp").lower()
    if value not in PROTOCOLS:
        raise ConfigError(f'{flag}: protocol must be tcp or udp, got "{text}"')
    return value


def _port(flag: str, text: str, value: str | int) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise ConfigError(f'{flag}: ports are 1-65535, got "{text}"')
    return port


def parse_port(text: str | ServicePort, flag: str = "--port") -> ServicePort:
    """``PORT[/PROTO]`` (tcp unless given) as a ServicePort; a ServicePort is checked."""
    if isinstance(text, ServicePort):
        shown = str(text)
        return ServicePort(_port(flag, shown, text.port), _proto(flag, shown, text.proto))
    m = _PORT.match(text)
    if m is None:
        raise ConfigError(f'{flag}: expected PORT[/PROTO], got "{text}"')
    return ServicePort(_port(flag, text, m["port"]), _proto(flag, text, m["proto"]))


def parse_publish(text: str | tuple[int, ServicePort]) -> tuple[int, ServicePort]:
    """``--publish HOST_PORT:PORT[/PROTO]`` as (host port, service port)."""
    if not isinstance(text, str):
        host, sp = text
        shown = f"{host}:{sp}"
        return _port("--publish", shown, host), parse_port(sp, "--publish")
    m = _PUBLISH.match(text)
    if m is None:
        raise ConfigError(f'--publish: expected HOST_PORT:PORT[/PROTO], got "{text}"')
    host = _port("--publish", text, m["host"])
    sp = ServicePort(_port("--publish", text, m["port"]), _proto("--publish", text, m["proto"]))
    return host, sp


def publish_mappings(publish: Iterable[tuple[int, ServicePort]]) -> list[PortMapping]:
    """A service's published ports as -p mappings (every host address), for the conflict
    checks and the kernel's precheck that -p goes through."""
    return [PortMapping(None, host, sp.port, sp.proto) for host, sp in publish]


@dataclass(frozen=True, slots=True)
class BackendRef:
    """A backend as given: SANDBOX[:PORT] (``sandbox`` set) or IP:PORT (``address`` set)."""

    sandbox: str | None
    address: IPAddress | None
    port: int | None

    def __str__(self) -> str:
        host = self.sandbox if self.sandbox is not None else str(self.address)
        return host if self.port is None else f"{host}:{self.port}"


def parse_backend(
    text: str | BackendRef, flag: str = "--backend", existing: bool = False
) -> BackendRef:
    """``SANDBOX[:PORT]`` or ``IP:PORT``: a dotted quad is an address, and needs a port
    unless the backend named is an ``existing`` one (--backend-rm, --weight), which may
    also be named by its identity (a sandbox's address without a port)."""
    if isinstance(text, BackendRef):
        return text
    m = _BACKEND.match(text)
    if m is None:
        raise ConfigError(f'{flag}: expected {_BACKEND_FORM}, got "{text}"')
    port = None if m["port"] is None else _port(flag, text, m["port"])
    if not _DOTTED.match(m["host"]):
        return BackendRef(m["host"], None, port)
    addr = parse_address(flag, m["host"])
    if port is None and not existing:
        raise ConfigError(f'{flag}: expected {_BACKEND_FORM}, got "{text}"')
    return BackendRef(None, addr, port)


def _weight(flag: str, text: str, value: str | int) -> int:
    try:
        w = int(value)
    except ValueError:
        w = -1
    if not 0 <= w <= MAX_WEIGHT:
        raise ConfigError(f'{flag}: WEIGHT must be an integer from 0 to {MAX_WEIGHT}, got "{text}"')
    return w


def parse_weight(text: str) -> tuple[BackendRef, int]:
    """``--weight BACKEND=WEIGHT``: the backend as given, and a weight >= 0."""
    ref, sep, value = text.partition("=")
    if not sep or not ref or not value:
        raise ConfigError(f'--weight: expected BACKEND=WEIGHT, got "{text}"')
    return parse_backend(ref, "--weight", existing=True), _weight("--weight", text, value)


def parse_maglev_size(value: str | int | None) -> int | None:
    """``--maglev-size M``: a prime of `maglev.MAGLEV_SIZES`' range (`maglev.check_size`)."""
    if value is None:
        return None
    from pydp.control.maglev import MAGLEV_SIZES, check_size  # numpy: only when given

    text = str(value)
    if not text.isdigit():
        raise ConfigError(
            f"--maglev-size: expected a prime from {MAGLEV_SIZES[0]} to {MAGLEV_SIZES[-1]},"
            f' got "{text}"'
        )
    try:
        return check_size(int(text))
    except ConfigError as e:
        raise ConfigError(f"--maglev-size: {e}") from None


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """``service create``'s flags, parsed and checked against each other."""

    ports: tuple[ServicePort, ...]
    vip: IPAddress | None
    mode: str
    publish: tuple[tuple[int, ServicePort], ...]
    lb: str
    maglev_size: int | None


def _check_modes(mode: str, lb: str) -> None:
    if mode not in MODES:
        raise ConfigError(f'--mode: expected {" or ".join(MODES)}, got "{mode}"')
    if lb not in LB_MODES:
        raise ConfigError(f'--lb: expected {" or ".join(LB_MODES)}, got "{lb}"')


def _check_dnsrr(spec: ServiceSpec) -> None:
    """dnsrr: no VIP, so nothing to publish and no load balancer."""
    if spec.vip is not None:
        raise ConfigError("--vip: a dnsrr service has no VIP")
    if spec.publish:
        raise ConfigError(
            "--publish: a dnsrr service cannot publish ports (the routing mesh leads to a VIP);"
            " use --mode vip"
        )
    if spec.lb != "maglev" or spec.maglev_size is not None:
        flag = "--lb" if spec.lb != "maglev" else "--maglev-size"
        raise ConfigError(f"{flag}: a dnsrr service has no load balancer")


def parse_spec(
    ports: Sequence[str | ServicePort],
    vip: str | IPAddress | None = None,
    mode: str = "vip",
    publish: Sequence[str | tuple[int, ServicePort]] = (),
    lb: str = "maglev",
    maglev_size: str | int | None = None,
) -> ServiceSpec:
    """Every flag of ``service create`` but the name, network and backends, checked."""
    _check_modes(mode, lb)
    parsed = [parse_port(p) for p in ports]
    for i, sp in enumerate(parsed):
        if sp in parsed[:i]:
            raise ConfigError(f"--port: {sp} is given twice")
    addr = vip if vip is None or isinstance(vip, IPAddress) else parse_address("--vip", vip)
    pub = tuple(parse_publish(p) for p in publish)
    spec = ServiceSpec(tuple(parsed), addr, mode, pub, lb, parse_maglev_size(maglev_size))
    if mode == "dnsrr":
        _check_dnsrr(spec)
    elif not parsed:
        raise ConfigError("--port: a vip service needs at least one port")
    if lb == "random" and spec.maglev_size is not None:
        raise ConfigError("--maglev-size: only with --lb maglev")
    for _, sp in pub:
        if sp not in spec.ports:
            ports_text = ", ".join(str(p) for p in spec.ports)
            raise ConfigError(
                f"--publish: {sp} is not a port of the service (its ports: {ports_text})"
            )
    return spec


def check_network(net: Network) -> None:
    """Only networks with IPAM and a datapath (bridge, overlay) hold services."""
    if net.driver not in SERVICE_DRIVERS or net.pool is None:
        raise ConfigError(
            f"--network: network {net.name} ({net.driver} driver) cannot hold services;"
            " use a bridge or overlay network"
        )


def choose_vip(net: Network, vip: IPAddress | None, used: Collection[IPAddress]) -> IPAddress:
    """The given VIP, checked as a static --ip is; else the pool's next free address, as an
    endpoint would get it."""
    assert net.pool is not None
    owner = f"network {net.name}"
    if vip is not None:
        return net.pool.check_static(vip, used, owner, "--vip")
    return net.pool.allocate(used, owner)


def free_index(used: Collection[int]) -> int:
    """The smallest service index not in use (1..MAX_INDEX)."""
    for i in range(1, MAX_INDEX + 1):
        if i not in used:
            return i
    raise ConflictError(f"service create: every service index (1-{MAX_INDEX}) is in use")


def _check_address(flag: str, ref: BackendRef, vips: Mapping[IPAddress, str]) -> None:
    assert ref.address is not None
    addr = ref.address
    if addr.is_loopback() or addr.is_multicast() or int(addr) in (0, 0xFFFF_FFFF):
        raise ConfigError(f"{flag}: {addr} is not a unicast address")
    if addr in vips:
        raise ConflictError(f"{flag}: {addr} is the VIP of service {vips[addr]}")


def resolve_backends(
    flag: str,
    refs: Sequence[BackendRef],
    net: Network,
    endpoints: Sequence[Endpoint],
    sandboxes: Collection[str],
    vips: Mapping[IPAddress, str],
) -> tuple[ServiceBackend, ...]:
    """Backends as given, resolved: a sandbox's address (and node) is its endpoint's on the
    service's network (``endpoints``: that network's); an address is any unicast IPv4 but
    a VIP.
    A backend given twice (or the same address and port twice) is refused."""
    by_sandbox = {e.sandbox: e for e in endpoints}
    out: list[ServiceBackend] = []
    for ref in refs:
        if ref.sandbox is None:
            _check_address(flag, ref, vips)
            assert ref.address is not None
            backend = ServiceBackend(ref.address, ref.port)
        else:
            ep = by_sandbox.get(ref.sandbox)
            if ref.sandbox not in sandboxes:
                raise NotFoundError(f"{flag}: unknown backend {ref} (no sandbox {ref.sandbox})")
            if ep is None or ep.address is None:
                raise ConfigError(
                    f"{flag}: sandbox {ref.sandbox} is not connected to network {net.name}"
                )
            backend = ServiceBackend(ep.address, ref.port, sandbox=ref.sandbox, node=ep.node)
        for other in out:
            if other.identity == backend.identity:
                if other.spec == backend.spec:
                    raise ConfigError(f"{flag}: {ref} is given twice")
                raise ConfigError(
                    f"{flag}: {ref} and {other.spec} are the same backend ({backend.identity})"
                )
        out.append(backend)
    return tuple(out)


def find_backend(
    flag: str, svc: Service, backends: Sequence[ServiceBackend], ref: BackendRef
) -> int:
    """The index in backends of the one backend ref names: SANDBOX (its backend without a
    port, or its only one), SANDBOX:PORT, or IP[:PORT] (its identity, however given)."""
    if ref.sandbox is not None:
        found = [i for i, b in enumerate(backends) if b.sandbox == ref.sandbox]
        if ref.port is not None:
            found = [i for i in found if backends[i].port == ref.port]
        elif len(found) > 1:
            found = [i for i in found if backends[i].port is None] or found
    else:
        found = [
            i for i, b in enumerate(backends) if b.address == ref.address and b.port == ref.port
        ]
    if not found:
        raise NotFoundError(f"{flag}: {ref} is not a backend of service {svc.name}")
    if len(found) > 1:
        specs = ", ".join(backends[i].spec for i in found)
        raise ConfigError(f"{flag}: {ref} names several backends of service {svc.name} ({specs})")
    return found[0]


def update_backends(
    svc: Service,
    add: Sequence[ServiceBackend] = (),
    remove: Sequence[BackendRef] = (),
    weights: Sequence[tuple[BackendRef, int]] = (),
    drain: bool = False,
) -> tuple[ServiceBackend, ...]:
    """svc's backends after ``service update``: removals first (kept as draining with
    ``drain``), then additions (a draining backend added again is active again, with its
    weight), then weights."""
    backends = list(svc.backends)
    removed = set()
    for ref in remove:
        i = find_backend("--backend-rm", svc, backends, ref)
        removed.add(backends[i].identity)
        if drain:
            backends[i] = dataclasses.replace(backends[i], draining=True)
        else:
            del backends[i]
    for new in add:
        if new.identity in removed:
            raise ConfigError(f"--backend-add: {new.spec} is also given to --backend-rm")
        same = [i for i, b in enumerate(backends) if b.identity == new.identity]
        if not same:
            backends.append(new)
        elif backends[same[0]].draining:
            backends[same[0]] = dataclasses.replace(new, weight=backends[same[0]].weight)
        else:
            raise ConflictError(
                f"--backend-add: {new.spec} is already a backend of service {svc.name}"
            )
    for ref, weight in weights:
        i = find_backend("--weight", svc, backends, ref)
        backends[i] = dataclasses.replace(
            backends[i], weight=_weight("--weight", f"{ref}={weight}", weight)
        )
    return tuple(backends)


def check_table(svc: Service) -> None:
    """A Maglev table needs at least one slot per active backend; a random table takes a
    slot per unit of weight, at most `RANDOM_MAX_SLOTS`."""
    if svc.mode != "vip":
        return
    active = svc.active_backends()
    if svc.lb == "maglev" and len(active) > svc.table_size():
        raise ConfigError(
            f"--maglev-size: {svc.table_size()} is too small for {len(active)} active backends"
            " (accepted: a size at least the number of backends)"
        )
    slots = sum(b.weight for b in active)
    if svc.lb == "random" and slots > RANDOM_MAX_SLOTS:
        raise ConfigError(
            f"--weight: the weights of service {svc.name} add up to {slots}; with --lb random"
            f" they may add up to {RANDOM_MAX_SLOTS} (a table slot per unit of weight)"
        )

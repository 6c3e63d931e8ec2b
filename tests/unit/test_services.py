"""Services in the control layer over a real SQLite store: VIPs, ports, backends, rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from netaddr import IPAddress

from pydp.control import maglev, services
from pydp.control.controller import Controller
from pydp.control.model import Service, ServiceBackend, ServicePort
from pydp.control.ports import parse_publish
from pydp.control.services import BackendRef, parse_backend, parse_port, parse_weight
from pydp.errors import ConfigError, ConflictError, NotFoundError, PydpError
from pydp.store import open_store


@pytest.fixture
def ctl(tmp_path: Path) -> Controller:
    """Function scope: a controller of node h1 over a fresh store in tmp_path."""
    return Controller(open_store(tmp_path / "state"), netns_prefix="pdu-", node="h1")


@pytest.fixture
def world(ctl: Controller) -> Controller:
    """Function scope, on ctl: n1 10.7.0.0/24 with sandboxes a (10.7.0.2) and b (10.7.0.3),
    n2 10.8.0.0/24 with z (10.8.0.2); service web on n1 (VIP 10.7.0.4, 80/tcp published
    on 8080, backend a); sandbox c on n1 (10.7.0.5) publishing 9090:80."""
    ctl.create_network("n1", subnet="10.7.0.0/24")
    ctl.create_network("n2", subnet="10.8.0.0/24")
    ctl.run_sandbox("a", "n1")
    ctl.run_sandbox("b", "n1")
    ctl.run_sandbox("z", "n2")
    ctl.create_service("web", "n1", ["80"], publish=["8080:80"], backends=["a"])
    ctl.run_sandbox("c", "n1", ports=parse_publish("9090:80"))
    return ctl


def ip(text: str) -> IPAddress:
    return IPAddress(text)


def test_services_all_is_sorted_and_real() -> None:
    """pydp.control.services exports a sorted __all__ of real names; its weight limit is
    the Maglev fill loop's."""
    assert list(services.__all__) == sorted(services.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(services, name) for name in services.__all__)
    assert services.MAX_WEIGHT == maglev.MAX_WEIGHT
    assert maglev.MAGLEV_SIZES[-1] == services.RANDOM_MAX_SLOTS


def test_create_allocates_vip_after_endpoints(world: Controller) -> None:
    """Without --vip the VIP is the pool's next free address, as an endpoint's would be;
    the service gets index 1, its backend a's endpoint address."""
    web = world.service("web")
    assert (web.vip, web.index, web.mode, web.lb) == (ip("10.7.0.4"), 1, "vip", "maglev")
    assert web.ports == (ServicePort(80, "tcp"),)
    assert web.publish == ((8080, ServicePort(80, "tcp")),)
    assert web.backends == (ServiceBackend(ip("10.7.0.2"), None, 1, "a", node="h1"),)
    assert world.service(web.id[:12]) == web and world.service(web.id) == web
    assert [s.name for s in world.services()] == ["web"]


def test_vip_never_given_to_a_container_and_back(world: Controller) -> None:
    """A later container skips every VIP; --ip of a VIP is refused; a given VIP taken by
    a container is refused; rm returns the VIP to the pool."""
    _, ep = world.run_sandbox("d", "n1")
    assert ep.address == ip("10.7.0.6")  # .4 is web's VIP, .5 is c's
    api = world.create_service("api", "n1", ["80"], vip="10.7.0.100")
    assert api.vip == ip("10.7.0.100")
    with pytest.raises(ConflictError, match=r"^--ip: 10\.7\.0\.100 is already in use"):
        world.run_sandbox("e", "n1", ip="10.7.0.100")
    _, ep = world.run_sandbox("e", "n1")
    assert ep.address == ip("10.7.0.7")
    world.remove_service("web")
    assert world.create_service("web2", "n1", ["80"]).vip == ip("10.7.0.4")


def test_dnsrr_has_no_vip(world: Controller) -> None:
    """dnsrr services take no address from the pool and need no port."""
    svc = world.create_service("dns", "n1", [], mode="dnsrr", backends=["a", "b"])
    assert (svc.vip, svc.mode, len(svc.backends)) == (None, "dnsrr", 2)
    assert world.run_sandbox("d", "n1")[1].address == ip("10.7.0.6")


def test_publish_conflicts_both_ways(world: Controller) -> None:
    """A service's published port is refused to containers (-p) and other services, and a
    container's to services, with -p's message; free ports for -p PORT skip it."""
    with pytest.raises(ConflictError, match=r"^--publish: host port 8080/tcp is already"):
        world.run_sandbox("d", "n1", ports=parse_publish("8080:81"))
    with pytest.raises(ConflictError, match=r"^--publish: host port 9090/tcp is already"):
        world.create_service("api", "n1", ["80"], publish=["9090:80"])
    svc = world.create_service("udp", "n1", ["53/udp"], publish=["49153:53/udp"])
    _, ep = world.run_sandbox("d", "n1", ports=parse_publish("53/udp"))
    assert svc.publish[0][0] == 49153 and ep.ports[0].host_port == 49154
    # the same number over the other protocol is another port
    assert world.create_service("tcp", "n1", ["53"], publish=["49153:53"]).publish


def test_update_add_remove_weight(world: Controller) -> None:
    """Backends are added (SANDBOX, SANDBOX:PORT, IP:PORT), weighted and removed; a removed
    one is gone at once (reset semantics)."""
    svc = world.update_service("web", add=["b:8080", "192.168.9.9:80"], weights={"a": 3})
    assert [(b.spec, b.identity, b.weight) for b in svc.backends] == [
        ("a", "10.7.0.2", 3),
        ("b:8080", "10.7.0.3:8080", 1),
        ("192.168.9.9:80", "192.168.9.9:80", 1),
    ]
    svc = world.update_service("web", remove=["b", "192.168.9.9:80"], weights={"10.7.0.2": 0})
    assert svc.backends == (ServiceBackend(ip("10.7.0.2"), None, 0, "a", node="h1"),)
    assert svc.active_backends() == () and world.service("web") == svc


def test_update_drain_keeps_then_re_adds(world: Controller) -> None:
    """--drain keeps a removed backend as draining (out of the table); adding it again makes
    it active with its weight; removing it without --drain removes it."""
    world.update_service("web", add=["b"], weights={"a": 5})
    svc = world.update_service("web", remove=["a"], drain=True)
    assert [(b.spec, b.draining) for b in svc.backends] == [("a", True), ("b", False)]
    assert [b.spec for b in svc.active_backends()] == ["b"]
    svc = world.update_service("web", add=["a"])
    assert [(b.spec, b.weight, b.draining) for b in svc.backends] == [
        ("a", 5, False),
        ("b", 1, False),
    ]
    world.update_service("web", remove=["a"], drain=True)
    assert [b.spec for b in world.update_service("web", remove=["a"]).backends] == ["b"]


def test_backend_references(world: Controller) -> None:
    """--backend-rm and --weight name a backend as given, or by its identity; a sandbox
    alone naming several of its backends is refused, listing them."""
    world.update_service("web", add=["b:81", "b:82", "10.1.2.3:80"])
    with pytest.raises(ConfigError) as e:
        world.update_service("web", remove=["b"])
    assert str(e.value) == "--backend-rm: b names several backends of service web (b:81, b:82)"
    svc = world.update_service("web", remove=["10.7.0.3:81", "10.1.2.3:80"], weights={"b": 4})
    assert [(b.spec, b.weight) for b in svc.backends] == [("a", 1), ("b:82", 4)]
    svc = world.update_service("web", remove=["10.7.0.2"], weights={"10.7.0.3:82": 0})
    assert [(b.spec, b.weight) for b in svc.backends] == [("b:82", 0)]


def test_random_weights_bounded(world: Controller) -> None:
    """A random table has a slot per unit of weight: weights adding up to more than
    131071 are refused, and nothing is stored."""
    world.create_service("x", "n1", ["80"], lb="random", backends=["a", "b"])
    world.update_service("x", weights={"a": 100000, "b": 31071})
    rev = world.store.revision()
    with pytest.raises(ConfigError) as e:
        world.update_service("x", weights={"b": 31072})
    assert str(e.value) == (
        "--weight: the weights of service x add up to 131072; with --lb random they may add"
        " up to 131071 (a table slot per unit of weight)"
    )
    assert world.store.revision() == rev


def test_unchanged_update_writes_nothing(world: Controller) -> None:
    """An update that changes nothing creates no store revision."""
    rev = world.store.revision()
    world.update_service("web", weights={"a": 1})
    assert world.store.revision() == rev


def test_sandbox_removal_and_disconnect_pull_backends(world: Controller) -> None:
    """Removing a sandbox, or disconnecting it from the network, removes its backends from
    that network's services in the same change (draining ones too); other networks' keep."""
    world.connect("n2", "a")
    other = world.create_service("other", "n2", ["80"], backends=["a", "z"])
    world.update_service("web", add=["b:81"])
    world.update_service("web", remove=["b:81"], drain=True)
    world.update_service("web", add=["b:82"])
    world.disconnect("n1", "b")
    assert [b.spec for b in world.service("web").backends] == ["a"]
    world.disconnect("n1", "a")
    assert world.service("web").backends == ()
    assert world.service("other") == other
    world.remove_sandbox("a")
    assert [b.spec for b in world.service("other").backends] == ["z"]


def test_network_with_services_is_kept(world: Controller) -> None:
    """network rm refuses a network with services (naming them); prune skips it."""
    world.create_network("n3", subnet="10.9.0.0/24")
    world.create_service("api", "n3", ["80"], backends=["10.1.2.3:80"])
    world.create_service("db", "n3", ["5432"])
    with pytest.raises(ConflictError, match=r"^network n3 has services \(api, db\)$"):
        world.remove_network("n3")
    assert world.prune() == []
    world.remove_service("api")
    world.remove_service("db")
    assert [n.name for n in world.prune()] == ["n3"]


def test_index_is_smallest_free_and_reused(world: Controller) -> None:
    """Indexes are the smallest free from 1; a removed service's index is reused."""
    assert [world.create_service(n, "n1", ["80"]).index for n in ("s2", "s3", "s4")] == [2, 3, 4]
    world.remove_service("s3")
    world.remove_service("web")
    assert world.create_service("s5", "n1", ["80"]).index == 1
    assert world.create_service("s6", "n1", ["80"]).index == 3
    assert services.free_index(set(range(1, 100))) == 100
    with pytest.raises(ConflictError, match=r"every service index \(1-131071\) is in use"):
        services.free_index(range(1, 131072))


def test_json_round_trip() -> None:
    """A service, every field set, survives to_json/from_json unchanged."""
    svc = Service(
        "f" * 64,
        "web",
        "e" * 64,
        7,
        ip("10.7.0.9"),
        (ServicePort(80, "tcp"), ServicePort(53, "udp")),
        "vip",
        ((8080, ServicePort(80, "tcp")), (5353, ServicePort(53, "udp"))),
        (
            ServiceBackend(ip("10.7.0.2"), None, 3, "a", node="h1"),
            ServiceBackend(ip("10.1.2.3"), 8080, 0, None, True),
        ),
        "random",
        None,
        1700000000.5,
    )
    assert Service.from_json(svc.to_json()) == svc
    dns = Service("1" * 64, "dns", "2" * 64, 1, None, (), "dnsrr", maglev_size=509)
    assert Service.from_json(dns.to_json()) == dns


def test_table_size_and_identity() -> None:
    """Maglev: the given size, else the default for the active backends; random: one slot
    per active backend. A backend's identity is address[:port]."""
    a = ServiceBackend(ip("10.0.0.2"), None)
    b = ServiceBackend(ip("10.0.0.3"), 8080, weight=2)
    off = ServiceBackend(ip("10.0.0.4"), 80, weight=0)
    gone = ServiceBackend(ip("10.0.0.5"), 80, draining=True)
    svc = Service("i", "s", "n", 1, ip("10.0.0.9"), (ServicePort(80),), backends=(a, b, off, gone))
    assert (a.identity, b.identity) == ("10.0.0.2", "10.0.0.3:8080")
    assert svc.active_backends() == (a, b)
    assert svc.table_size() == maglev.default_size(2) == 251
    assert dataclasses.replace(svc, maglev_size=1021).table_size() == 1021
    assert dataclasses.replace(svc, lb="random").table_size() == 2
    assert dataclasses.replace(svc, lb="random", backends=()).table_size() == 0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("80", ServicePort(80, "tcp")),
        ("53/udp", ServicePort(53, "udp")),
        ("53/UDP", ServicePort(53, "udp")),
        ("65535/tcp", ServicePort(65535, "tcp")),
    ],
)
def test_parse_port_forms(text: str, want: ServicePort) -> None:
    """--port PORT[/PROTO], tcp unless given."""
    assert parse_port(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("web", BackendRef("web", None, None)),
        ("web:8080", BackendRef("web", None, 8080)),
        ("db.1_x-y", BackendRef("db.1_x-y", None, None)),
        ("10.1.2.3:80", BackendRef(None, ip("10.1.2.3"), 80)),
    ],
)
def test_parse_backend_forms(text: str, want: BackendRef) -> None:
    """--backend SANDBOX[:PORT] or IP:PORT; printed back as given."""
    assert parse_backend(text) == want and str(want) == text


def test_parse_weight() -> None:
    """--weight BACKEND=WEIGHT, 0 up to the Maglev loop's limit."""
    assert parse_weight("web:80=0") == (BackendRef("web", None, 80), 0)
    assert parse_weight("10.1.2.3:80=4294967295")[1] == 4294967295


WEIGHT_RANGE = "WEIGHT must be an integer from 0 to 4294967295"
MAGLEV_ACCEPTED = "accepted: a prime from 251 to 131071"
Call = Callable[[Controller], object]


def many(n: int) -> list[str]:
    return [f"10.200.{i // 250}.{i % 250 + 1}:80" for i in range(n)]


# Every bad input of the item 8 (and the rest of the rules): the call, the error.
BAD: list[tuple[str, Call, type[PydpError], str]] = [
    # VIP
    (
        "vip-outside",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.9.0.5"),
        ConfigError,
        "--vip: 10.9.0.5 is outside the subnet 10.7.0.0/24 of network n1",
    ),
    (
        "vip-endpoint",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.7.0.2"),
        ConflictError,
        "--vip: 10.7.0.2 is already in use in network n1",
    ),
    (
        "vip-other-service",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.7.0.4"),
        ConflictError,
        "--vip: 10.7.0.4 is already in use in network n1",
    ),
    (
        "vip-gateway",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.7.0.1"),
        ConfigError,
        "--vip: 10.7.0.1 is reserved in network n1 (network, gateway or aux)",
    ),
    (
        "vip-broadcast",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.7.0.255"),
        ConfigError,
        "--vip: 10.7.0.255 is reserved in network n1 (network, gateway or aux)",
    ),
    (
        "vip-network",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.7.0.0"),
        ConfigError,
        "--vip: 10.7.0.0 is reserved in network n1 (network, gateway or aux)",
    ),
    (
        "vip-form",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.7.0"),
        ConfigError,
        '--vip: invalid IPv4 address "10.7.0"',
    ),
    (
        "vip-dnsrr",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.7.0.50", mode="dnsrr"),
        ConfigError,
        "--vip: a dnsrr service has no VIP",
    ),
    (
        "container-ip-is-vip",
        lambda c: c.run_sandbox("d", "n1", ip="10.7.0.4"),
        ConflictError,
        "--ip: 10.7.0.4 is already in use in network n1",
    ),
    # backends
    (
        "backend-unknown",
        lambda c: c.create_service("x", "n1", ["80"], backends=["ghost"]),
        NotFoundError,
        "--backend: unknown backend ghost (no sandbox ghost)",
    ),
    (
        "backend-other-network",
        lambda c: c.create_service("x", "n1", ["80"], backends=["a", "z"]),
        ConfigError,
        "--backend: sandbox z is not connected to network n1",
    ),
    (
        "backend-port-range",
        lambda c: c.create_service("x", "n1", ["80"], backends=["a:0"]),
        ConfigError,
        '--backend: ports are 1-65535, got "a:0"',
    ),
    (
        "backend-ip-port-range",
        lambda c: c.create_service("x", "n1", ["80"], backends=["10.1.2.3:65536"]),
        ConfigError,
        '--backend: ports are 1-65535, got "10.1.2.3:65536"',
    ),
    (
        "backend-ip-without-port",
        lambda c: c.create_service("x", "n1", ["80"], backends=["10.1.2.3"]),
        ConfigError,
        '--backend: expected SANDBOX[:PORT] or IP:PORT, got "10.1.2.3"',
    ),
    (
        "backend-form",
        lambda c: c.create_service("x", "n1", ["80"], backends=["a:b:c"]),
        ConfigError,
        '--backend: expected SANDBOX[:PORT] or IP:PORT, got "a:b:c"',
    ),
    (
        "backend-bad-ip",
        lambda c: c.create_service("x", "n1", ["80"], backends=["10.1.2.300:80"]),
        ConfigError,
        '--backend: invalid IPv4 address "10.1.2.300"',
    ),
    (
        "backend-not-unicast",
        lambda c: c.create_service("x", "n1", ["80"], backends=["224.0.0.1:80"]),
        ConfigError,
        "--backend: 224.0.0.1 is not a unicast address",
    ),
    (
        "backend-is-a-vip",
        lambda c: c.create_service("x", "n1", ["80"], backends=["10.7.0.4:80"]),
        ConflictError,
        "--backend: 10.7.0.4 is the VIP of service web",
    ),
    (
        "backend-is-own-vip",
        lambda c: c.create_service("x", "n1", ["80"], vip="10.7.0.9", backends=["10.7.0.9:80"]),
        ConflictError,
        "--backend: 10.7.0.9 is the VIP of service x",
    ),
    (
        "backend-twice",
        lambda c: c.create_service("x", "n1", ["80"], backends=["a", "b", "a"]),
        ConfigError,
        "--backend: a is given twice",
    ),
    (
        "backend-twice-other-form",
        lambda c: c.create_service("x", "n1", ["80"], backends=["a:80", "10.7.0.2:80"]),
        ConfigError,
        "--backend: 10.7.0.2:80 and a:80 are the same backend (10.7.0.2:80)",
    ),
    # ports
    (
        "port-zero",
        lambda c: c.create_service("x", "n1", ["0"]),
        ConfigError,
        '--port: ports are 1-65535, got "0"',
    ),
    (
        "port-too-big",
        lambda c: c.create_service("x", "n1", ["65536/udp"]),
        ConfigError,
        '--port: ports are 1-65535, got "65536/udp"',
    ),
    (
        "port-form",
        lambda c: c.create_service("x", "n1", ["http"]),
        ConfigError,
        '--port: expected PORT[/PROTO], got "http"',
    ),
    (
        "port-proto",
        lambda c: c.create_service("x", "n1", ["80/sctp"]),
        ConfigError,
        '--port: protocol must be tcp or udp, got "80/sctp"',
    ),
    (
        "port-twice",
        lambda c: c.create_service("x", "n1", ["80", "80/tcp"]),
        ConfigError,
        "--port: 80/tcp is given twice",
    ),
    (
        "port-none",
        lambda c: c.create_service("x", "n1", []),
        ConfigError,
        "--port: a vip service needs at least one port",
    ),
    # published ports
    (
        "publish-taken-by-container",
        lambda c: c.create_service("x", "n1", ["80"], publish=["9090:80"]),
        ConflictError,
        "--publish: host port 9090/tcp is already published (9090:80/tcp)",
    ),
    (
        "publish-taken-by-service",
        lambda c: c.create_service("x", "n1", ["81"], publish=["8080:81"]),
        ConflictError,
        "--publish: host port 8080/tcp is already published (8080:80/tcp)",
    ),
    (
        "publish-twice",
        lambda c: c.create_service("x", "n1", ["80", "81"], publish=["7070:80", "7070:81"]),
        ConflictError,
        "--publish: host port 7070/tcp is already published (7070:80/tcp)",
    ),
    (
        "container-publish-taken-by-service",
        lambda c: c.run_sandbox("d", "n1", ports=parse_publish("8080:81")),
        ConflictError,
        "--publish: host port 8080/tcp is already published (8080:80/tcp)",
    ),
    (
        "publish-not-a-service-port",
        lambda c: c.create_service("x", "n1", ["80", "53/udp"], publish=["7070:53"]),
        ConfigError,
        "--publish: 53/tcp is not a port of the service (its ports: 80/tcp, 53/udp)",
    ),
    (
        "publish-form",
        lambda c: c.create_service("x", "n1", ["80"], publish=["80"]),
        ConfigError,
        '--publish: expected HOST_PORT:PORT[/PROTO], got "80"',
    ),
    (
        "publish-range",
        lambda c: c.create_service("x", "n1", ["80"], publish=["70000:80"]),
        ConfigError,
        '--publish: ports are 1-65535, got "70000:80"',
    ),
    (
        "publish-dnsrr",
        lambda c: c.create_service("x", "n1", ["80"], mode="dnsrr", publish=["7070:80"]),
        ConfigError,
        "--publish: a dnsrr service cannot publish ports (the routing mesh leads to a VIP);"
        " use --mode vip",
    ),
    # names, networks, modes
    (
        "name-taken",
        lambda c: c.create_service("web", "n1", ["80"]),
        ConflictError,
        "service web already exists",
    ),
    (
        "name-bad",
        lambda c: c.create_service("-x", "n1", ["80"]),
        ConfigError,
        'service name "-x": expected 1-64 characters of [a-zA-Z0-9_.-], starting with a letter'
        " or digit",
    ),
    (
        "network-unknown",
        lambda c: c.create_service("x", "ghost", ["80"]),
        NotFoundError,
        "network ghost not found",
    ),
    (
        "network-host",
        lambda c: c.create_service("x", "host", ["80"]),
        ConfigError,
        "--network: network host (host driver) cannot hold services;"
        " use a bridge or overlay network",
    ),
    (
        "network-none",
        lambda c: c.create_service("x", "none", ["80"]),
        ConfigError,
        "--network: network none (null driver) cannot hold services;"
        " use a bridge or overlay network",
    ),
    (
        "mode",
        lambda c: c.create_service("x", "n1", ["80"], mode="ipvs"),
        ConfigError,
        '--mode: expected vip or dnsrr, got "ipvs"',
    ),
    (
        "lb",
        lambda c: c.create_service("x", "n1", ["80"], lb="rr"),
        ConfigError,
        '--lb: expected maglev or random, got "rr"',
    ),
    (
        "lb-dnsrr",
        lambda c: c.create_service("x", "n1", ["80"], lb="random", mode="dnsrr"),
        ConfigError,
        "--lb: a dnsrr service has no load balancer",
    ),
    # Maglev size
    (
        "maglev-not-prime",
        lambda c: c.create_service("x", "n1", ["80"], maglev_size=1000),
        ConfigError,
        f"--maglev-size: maglev size 1000 is not prime: {MAGLEV_ACCEPTED}",
    ),
    (
        "maglev-too-small",
        lambda c: c.create_service("x", "n1", ["80"], maglev_size="7"),
        ConfigError,
        f"--maglev-size: maglev size 7 is out of range: {MAGLEV_ACCEPTED}",
    ),
    (
        "maglev-too-big",
        lambda c: c.create_service("x", "n1", ["80"], maglev_size=131101),
        ConfigError,
        f"--maglev-size: maglev size 131101 is out of range: {MAGLEV_ACCEPTED}",
    ),
    (
        "maglev-not-a-number",
        lambda c: c.create_service("x", "n1", ["80"], maglev_size="big"),
        ConfigError,
        '--maglev-size: expected a prime from 251 to 131071, got "big"',
    ),
    (
        "maglev-random",
        lambda c: c.create_service("x", "n1", ["80"], lb="random", maglev_size=251),
        ConfigError,
        "--maglev-size: only with --lb maglev",
    ),
    (
        "maglev-dnsrr",
        lambda c: c.create_service("x", "n1", [], mode="dnsrr", maglev_size=251),
        ConfigError,
        "--maglev-size: a dnsrr service has no load balancer",
    ),
    (
        "maglev-fewer-slots-than-backends",
        lambda c: c.create_service("x", "n1", ["80"], maglev_size=251, backends=many(252)),
        ConfigError,
        "--maglev-size: 251 is too small for 252 active backends (accepted: a size at least"
        " the number of backends)",
    ),
    # update
    (
        "weight-negative",
        lambda c: c.update_service("web", weights={"a": -1}),
        ConfigError,
        f'--weight: {WEIGHT_RANGE}, got "a=-1"',
    ),
    (
        "weight-too-big",
        lambda c: c.update_service("web", weights={"a": 2**32}),
        ConfigError,
        f'--weight: {WEIGHT_RANGE}, got "a=4294967296"',
    ),
    (
        "weight-unknown-backend",
        lambda c: c.update_service("web", weights={"b": 2}),
        NotFoundError,
        "--weight: b is not a backend of service web",
    ),
    (
        "weight-after-add-fails",
        lambda c: c.update_service("web", add=["b"], weights={"c": 2}),
        NotFoundError,
        "--weight: c is not a backend of service web",
    ),
    (
        "backend-rm-unknown",
        lambda c: c.update_service("web", add=["b"], remove=["10.1.2.3:80"]),
        NotFoundError,
        "--backend-rm: 10.1.2.3:80 is not a backend of service web",
    ),
    (
        "backend-add-ip-without-port",
        lambda c: c.update_service("web", add=["b", "10.7.0.2"]),
        ConfigError,
        '--backend-add: expected SANDBOX[:PORT] or IP:PORT, got "10.7.0.2"',
    ),
    (
        "backend-add-active",
        lambda c: c.update_service("web", add=["b", "a"]),
        ConflictError,
        "--backend-add: a is already a backend of service web",
    ),
    (
        "backend-add-unknown",
        lambda c: c.update_service("web", add=["ghost"]),
        NotFoundError,
        "--backend-add: unknown backend ghost (no sandbox ghost)",
    ),
    (
        "backend-add-and-rm",
        lambda c: c.update_service("web", add=["a"], remove=["a"]),
        ConfigError,
        "--backend-add: a is also given to --backend-rm",
    ),
    (
        "drain-without-rm",
        lambda c: c.update_service("web", add=["b"], drain=True),
        ConfigError,
        "--drain: only with --backend-rm",
    ),
    (
        "update-unknown-service",
        lambda c: c.update_service("ghost", add=["b"]),
        NotFoundError,
        "service ghost not found",
    ),
    (
        "rm-unknown-service",
        lambda c: c.remove_service("ghost"),
        NotFoundError,
        "service ghost not found",
    ),
    (
        "network-rm-with-endpoints",
        lambda c: c.remove_network("n1"),
        ConflictError,
        "network n1 has active endpoints (a, b, c)",
    ),
]


@pytest.mark.parametrize(("call", "kind", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_changes_nothing(
    world: Controller, call: Call, kind: type[PydpError], message: str
) -> None:
    """Each bad input raises one line naming the flag or object, and the store revision
    (so every key) is as it was."""
    rev = world.store.revision()
    with pytest.raises(kind) as e:
        call(world)
    assert (type(e.value), str(e.value)) == (kind, message)
    assert world.store.revision() == rev

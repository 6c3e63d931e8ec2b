"""Services through the pydp CLI in a host namespace: create, ls, inspect, update, rm, and
every bad input refused in one line with nothing changed (no traffic here)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydp.testing import Topology

from .conftest import PydpNode

HEADERS = ["NAME", "ID", "NETWORK", "MODE", "VIP", "PORTS", "BACKENDS"]


def rows(node: PydpNode) -> list[list[str]]:
    lines = node("service", "ls").stdout.splitlines()
    assert lines[0].split() == HEADERS
    return [line.split() for line in lines[1:]]


def backends(node: PydpNode, service: str) -> list[tuple[str, str, int, str]]:
    [svc] = node.json("service", "inspect", service)
    return [(b["Backend"], b["Address"], b["Weight"], b["State"]) for b in svc["Backends"]]


def test_service_create_ls_inspect_update_rm(pydp_node: PydpNode) -> None:
    """A service's whole life through the CLI: its VIP from the pool, ls and inspect,
    backends added, weighted, drained, re-added and pulled with their sandbox, then rm."""
    node = pydp_node
    node("network", "create", "--subnet", "10.61.0.0/24", "n1")
    for sb in ("a", "b"):
        node("sandbox", "create", sb)
        node("network", "connect", "n1", sb)
    out = node(
        "service",
        "create",
        "web",
        "--network",
        "n1",
        "--port",
        "80",
        "--port",
        "53/udp",
        "--publish",
        "8080:80",
        "--backend",
        "a",
        "--backend",
        "b:8080",
        "--backend",
        "10.70.0.9:80",
    ).stdout
    web_id = out.strip()
    assert len(web_id) == 64 and out == web_id + "\n"
    dns_id = node(
        "service", "create", "dns", "--network", "n1", "--mode", "dnsrr", "--backend", "a"
    ).stdout.strip()
    assert (
        rows(node)
        == [  # dns has no VIP and no port: empty columns
            ["dns", dns_id[:12], "n1", "dnsrr", "1/1"],
            ["web", web_id[:12], "n1", "vip", "10.61.0.4", "8080->80/tcp,53/udp", "3/3"],
        ]
    )
    assert node("service", "ls", "-q").stdout.split()[1] == web_id[:12]
    listed = node.json("service", "ls", "--format", "json")
    assert listed[1] == {
        "name": "web",
        "id": web_id,
        "network": "n1",
        "mode": "vip",
        "vip": "10.61.0.4",
        "ports": "8080->80/tcp,53/udp",
        "backends": "3/3",
    }
    assert (listed[0]["vip"], listed[0]["mode"]) == ("", "dnsrr")
    [web] = node.json("service", "inspect", web_id[:12])
    assert web["CreatedAt"].endswith("Z")
    del web["CreatedAt"]
    assert web == {
        "Name": "web",
        "Id": web_id,
        "Index": 1,
        "Network": "n1",
        "NetworkID": node.json("network", "inspect", "n1")[0]["Id"],
        "Scope": "local",
        "Mode": "vip",
        "VIP": "10.61.0.4",
        "Ports": ["80/tcp", "53/udp"],
        "PublishedPorts": [{"PublishedPort": 8080, "TargetPort": 80, "Protocol": "tcp"}],
        "LoadBalancer": {"Mode": "maglev", "MaglevSize": None, "TableSize": 509},
        "Backends": [
            {
                "Backend": "a",
                "Sandbox": "a",
                "Node": socket.gethostname(),  # no --node, no $PYDP_NODE
                "Address": "10.61.0.2",
                "Port": None,
                "Weight": 1,
                "State": "active",
            },
            {
                "Backend": "b:8080",
                "Sandbox": "b",
                "Node": socket.gethostname(),  # no --node, no $PYDP_NODE
                "Address": "10.61.0.3",
                "Port": 8080,
                "Weight": 1,
                "State": "active",
            },
            {
                "Backend": "10.70.0.9:80",
                "Sandbox": "",
                "Node": "",
                "Address": "10.70.0.9",
                "Port": 80,
                "Weight": 1,
                "State": "active",
            },
        ],
    }
    [dns] = node.json("service", "inspect", "dns")
    assert (dns["VIP"], dns["LoadBalancer"], dns["Index"]) == ("", None, 2)

    # a container never gets the VIP
    node("sandbox", "create", "c")
    node("network", "connect", "n1", "c")
    assert node.json("sandbox", "inspect", "c")[0]["Networks"]["n1"]["IPAddress"] == "10.61.0.5"

    assert node("service", "update", "web", "--backend-rm", "a", "--drain").stdout == "web\n"
    assert backends(node, "web")[0] == ("a", "10.61.0.2", 1, "draining")
    assert rows(node)[1][-1] == "2/3"
    node("service", "update", "web", "--backend-add", "a", "--weight", "b:8080=3")
    node("service", "update", "web", "--backend-rm", "10.70.0.9:80", "--weight", "a=0")
    assert backends(node, "web") == [
        ("a", "10.61.0.2", 0, "active"),
        ("b:8080", "10.61.0.3", 3, "active"),
    ]
    assert rows(node)[1][-1] == "1/2"
    node("sandbox", "rm", "b")
    assert backends(node, "web") == [("a", "10.61.0.2", 0, "active")]
    node("system", "reconcile")
    assert node("service", "rm", "web", "dns").stdout == "web\ndns\n"
    assert node("service", "ls").stdout == "  ".join(HEADERS) + "\n"
    node("network", "disconnect", "n1", "a")
    node("network", "disconnect", "n1", "c")
    assert node("network", "rm", "n1").stdout == "n1\n"


@pytest.fixture(scope="module")
def world(
    topology_module: Topology, bpffs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PydpNode]:
    """Module scope, depends on topology_module and bpffs: one pydp host shared by the
    bad inputs (each asserts it changed nothing): n1 10.61.0.0/24 with sandboxes a
    (10.61.0.2) and b (.3), service web (VIP .4, 80/tcp published on 8080, backend a) and
    c (.5) publishing 9090:80; n2 with z; n3 with service api only; overlays o1 and o2
    sharing 10.64.0.0/24, y (.2) on o2; a host process on port 7777; `system reset` at
    the end."""
    tmp = tmp_path_factory.mktemp("svc")
    node = PydpNode(topology_module.add_host("sv"), tmp / "state", bpffs / tmp.name)
    try:
        node("network", "create", "--subnet", "10.61.0.0/24", "n1")
        node("network", "create", "--subnet", "10.62.0.0/24", "n2")
        node("network", "create", "--subnet", "10.63.0.0/24", "n3")
        for sb, net in (("a", "n1"), ("b", "n1"), ("z", "n2")):
            node("sandbox", "create", sb)
            node("network", "connect", net, sb)
        node("service", "create", "web", "--network", "n1", "--port", "80")
        node("service", "update", "web", "--backend-add", "a")
        node("service", "rm", "web")  # index 1 and VIP .4 back to their pools
        web = ["web", "--network", "n1", "--port", "80", "--publish", "8080:80", "--backend", "a"]
        node("service", "create", *web)
        node("run", "--name", "c", "--network", "n1", "-p", "9090:80", "--", "true")
        node("service", "create", "api", "--network", "n3", "--port", "80")
        for net in ("o1", "o2"):  # overlays sharing a subnet
            node("network", "create", "-d", "overlay", "--subnet", "10.64.0.0/24", net)
        node("sandbox", "create", "y")
        node("network", "connect", "o2", "y")  # 10.64.0.2, in o2 only
        holder = node.host.popen(["socat", "TCP-LISTEN:7777,reuseaddr", "-"])
        holder.wait_port(7777)
        yield node
    finally:
        node("system", "reset", check=False)


def create(*args: str) -> list[str]:
    return ["service", "create", "x", "--network", "n1", *args]


WEIGHT_RANGE = "WEIGHT must be an integer from 0 to 4294967295"
MAGLEV_ACCEPTED = "accepted: a prime from 251 to 131071"
BAD: list[tuple[str, list[str], str]] = [
    # VIP outside the network or already in use
    (
        "vip-outside",
        create("--port", "80", "--vip", "10.69.0.5"),
        "--vip: 10.69.0.5 is outside the subnet 10.61.0.0/24 of network n1",
    ),
    (
        "vip-endpoint",
        create("--port", "80", "--vip", "10.61.0.2"),
        "--vip: 10.61.0.2 is already in use in network n1",
    ),
    (
        "vip-other-service",
        create("--port", "80", "--vip", "10.61.0.4"),
        "--vip: 10.61.0.4 is already in use in network n1",
    ),
    (
        "vip-overlapping-network",
        ["service", "create", "x", "--network", "o1", "--port", "80", "--vip", "10.64.0.2"],
        "--vip: 10.64.0.2 is in use in network o2, whose subnet overlaps o1's: a VIP must be"
        " free in both",
    ),
    (
        "vip-gateway",
        create("--port", "80", "--vip", "10.61.0.1"),
        "--vip: 10.61.0.1 is reserved in network n1 (network, gateway or aux)",
    ),
    (
        "vip-form",
        create("--port", "80", "--vip", "10.61.0"),
        '--vip: invalid IPv4 address "10.61.0"',
    ),
    (
        "vip-dnsrr",
        create("--port", "80", "--mode", "dnsrr", "--vip", "10.61.0.50"),
        "--vip: a dnsrr service has no VIP",
    ),
    (
        "run-ip-is-vip",
        ["run", "--network", "n1", "--ip", "10.61.0.4", "--", "true"],
        "--ip: 10.61.0.4 is already in use in network n1",
    ),
    (
        "connect-ip-is-vip",
        ["network", "connect", "--ip", "10.61.0.4", "n1", "z"],
        "--ip: 10.61.0.4 is already in use in network n1",
    ),
    # unknown backend
    (
        "backend-unknown",
        create("--port", "80", "--backend", "ghost"),
        "--backend: unknown backend ghost (no sandbox ghost)",
    ),
    (
        "backend-other-network",
        create("--port", "80", "--backend", "z"),
        "--backend: sandbox z is not connected to network n1",
    ),
    (
        "backend-port-range",
        create("--port", "80", "--backend", "a:0"),
        '--backend: ports are 1-65535, got "a:0"',
    ),
    (
        "backend-ip-without-port",
        create("--port", "80", "--backend", "10.1.2.3"),
        '--backend: expected SANDBOX[:PORT] or IP:PORT, got "10.1.2.3"',
    ),
    (
        "backend-twice",
        create("--port", "80", "--backend", "a", "--backend", "a"),
        "--backend: a is given twice",
    ),
    (
        "backend-is-a-vip",
        create("--port", "80", "--backend", "10.61.0.4:80"),
        "--backend: 10.61.0.4 is the VIP of service web",
    ),
    (
        "update-backend-add-unknown",
        ["service", "update", "web", "--backend-add", "ghost"],
        "--backend-add: unknown backend ghost (no sandbox ghost)",
    ),
    (
        "update-backend-add-existing",
        ["service", "update", "web", "--backend-add", "b", "--backend-add", "a"],
        "--backend-add: a is already a backend of service web",
    ),
    (
        "update-backend-rm-unknown",
        ["service", "update", "web", "--backend-rm", "b"],
        "--backend-rm: b is not a backend of service web",
    ),
    (
        "update-drain-without-rm",
        ["service", "update", "web", "--backend-add", "b", "--drain"],
        "--drain: only with --backend-rm",
    ),
    # port out of range
    ("port-zero", create("--port", "0"), '--port: ports are 1-65535, got "0"'),
    ("port-too-big", create("--port", "65536/udp"), '--port: ports are 1-65535, got "65536/udp"'),
    ("port-form", create("--port", "http"), '--port: expected PORT[/PROTO], got "http"'),
    (
        "port-proto",
        create("--port", "80/sctp"),
        '--port: protocol must be tcp or udp, got "80/sctp"',
    ),
    ("port-twice", create("--port", "80", "--port", "80/tcp"), "--port: 80/tcp is given twice"),
    ("port-none", create(), "--port: a vip service needs at least one port"),
    (
        "publish-port-range",
        create("--port", "80", "--publish", "70000:80"),
        '--publish: ports are 1-65535, got "70000:80"',
    ),
    # negative weight
    (
        "weight-negative",
        ["service", "update", "web", "--weight", "a=-1"],
        f'--weight: {WEIGHT_RANGE}, got "a=-1"',
    ),
    (
        "weight-form",
        ["service", "update", "web", "--weight", "a"],
        '--weight: expected BACKEND=WEIGHT, got "a"',
    ),
    (
        "weight-unknown-backend",
        ["service", "update", "web", "--weight", "b=2"],
        "--weight: b is not a backend of service web",
    ),
    # duplicate service name
    (
        "name-taken",
        ["service", "create", "web", "--network", "n1", "--port", "80"],
        "service web already exists",
    ),
    (
        "name-bad",
        ["service", "create", "a/b", "--network", "n1", "--port", "80"],
        'service name "a/b": expected 1-64 characters of [a-zA-Z0-9_.-], starting with a letter'
        " or digit",
    ),
    # Maglev size not prime or out of range
    (
        "maglev-not-prime",
        create("--port", "80", "--maglev-size", "1000"),
        f"--maglev-size: maglev size 1000 is not prime: {MAGLEV_ACCEPTED}",
    ),
    (
        "maglev-too-small",
        create("--port", "80", "--maglev-size", "7"),
        f"--maglev-size: maglev size 7 is out of range: {MAGLEV_ACCEPTED}",
    ),
    (
        "maglev-too-big",
        create("--port", "80", "--maglev-size", "131101"),
        f"--maglev-size: maglev size 131101 is out of range: {MAGLEV_ACCEPTED}",
    ),
    (
        "maglev-not-a-number",
        create("--port", "80", "--maglev-size", "big"),
        '--maglev-size: expected a prime from 251 to 131071, got "big"',
    ),
    (
        "maglev-random",
        create("--port", "80", "--lb", "random", "--maglev-size", "251"),
        "--maglev-size: only with --lb maglev",
    ),
    # published ports
    (
        "publish-taken-by-container",
        create("--port", "80", "--publish", "9090:80"),
        "--publish: host port 9090/tcp is already published (9090:80/tcp)",
    ),
    (
        "publish-taken-by-service",
        create("--port", "81", "--publish", "8080:81"),
        "--publish: host port 8080/tcp is already published (8080:80/tcp)",
    ),
    (
        "run-publish-taken-by-service",
        ["run", "--network", "n1", "-p", "8080:81", "--", "true"],
        "--publish: host port 8080/tcp is already published (8080:80/tcp)",
    ),
    (
        "publish-held-by-a-process",
        create("--port", "80", "--publish", "7777:80"),
        "--publish: host port 7777/tcp is in use by a process on this host",
    ),
    (
        "publish-not-a-service-port",
        create("--port", "80", "--publish", "7070:81"),
        "--publish: 81/tcp is not a port of the service (its ports: 80/tcp)",
    ),
    (
        "publish-form",
        create("--port", "80", "--publish", "80"),
        '--publish: expected HOST_PORT:PORT[/PROTO], got "80"',
    ),
    (
        "publish-dnsrr",
        create("--port", "80", "--mode", "dnsrr", "--publish", "7070:80"),
        "--publish: a dnsrr service cannot publish ports (the routing mesh leads to a VIP);"
        " use --mode vip",
    ),
    # modes, networks, unknown services
    ("mode", create("--port", "80", "--mode", "ipvs"), '--mode: expected vip or dnsrr, got "ipvs"'),
    ("lb", create("--port", "80", "--lb", "rr"), '--lb: expected maglev or random, got "rr"'),
    (
        "network-unknown",
        ["service", "create", "x", "--network", "ghost", "--port", "80"],
        "network ghost not found",
    ),
    (
        "network-host",
        ["service", "create", "x", "--network", "host", "--port", "80"],
        "--network: network host (host driver) cannot hold services;"
        " use a bridge or overlay network",
    ),
    ("network-rm-with-services", ["network", "rm", "n3"], "network n3 has services (api)"),
    ("service-rm-unknown", ["service", "rm", "ghost"], "service ghost not found"),
    ("service-inspect-unknown", ["service", "inspect", "ghost"], "service ghost not found"),
    (
        "service-update-unknown",
        ["service", "update", "ghost", "--backend-add", "b"],
        "service ghost not found",
    ),
]


@pytest.mark.parametrize(("args", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_changes_nothing(world: PydpNode, args: list[str], message: str) -> None:
    """Each bad input is one 'Error:' line naming the flag or object, exit 1, and the store
    and the kernel are exactly as they were."""
    before = world.snapshot()
    r = world(*args, check=False)
    assert (r.returncode, r.stderr) == (1, f"Error: {message}\n")
    assert world.snapshot() == before


def test_service_usage_errors_exit_2(world: PydpNode) -> None:
    """A missing --network or NAME is a usage error: one line, exit 2."""
    r = world("service", "create", "x", "--port", "80", check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("Error: the following arguments are required: --network")
    assert r.stderr.count("\n") == 1

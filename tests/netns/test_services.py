"""Service VIPs through from_container: three backends behind one VIP, with real clients."""

from __future__ import annotations

import collections
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pydp.testing import Background

from .conftest import PydpNode
from .test_nat import UPLINK, World, world  # noqa: F401  (world: the fixture)

BACKENDS = ("web1", "web2", "web3")


def serve(node: PydpNode, name: str, *extra: str) -> None:
    """Sandbox ``name``: every TCP connection on port 80 gets its name, then an echo."""
    node(
        "run", "--name", name, *extra, "-d", "--",
        "socat", "TCP-LISTEN:80,reuseaddr,fork", f"SYSTEM:echo {name}; cat",
    )  # fmt: skip


def wait_listening(node: PydpNode, name: str, port: int = 80, proto: str = "t") -> None:
    node(
        "exec", name, "--", "sh", "-c",
        f"for i in $(seq 50); do ss -l{proto}n | grep -q :{port} && exit 0; sleep 0.1; done;"
        " exit 1",
    )  # fmt: skip


@dataclass
class Svc:
    node: PydpNode
    vip: str

    def ask(self, count: int, client: str = "", port: int = 80) -> collections.Counter[str]:
        """``count`` connections from one client container (a new one with --rm unless
        ``client`` names a sandbox), the answers counted."""
        loop = (
            f"for i in $(seq {count}); do socat -T2 - TCP:{self.vip}:{port},connect-timeout=2"
            " </dev/null || echo failed; done"
        )
        if client:
            r = self.node("exec", client, "--", "sh", "-c", loop, timeout=120)
        else:
            r = self.node("run", "--rm", "--", "sh", "-c", loop, timeout=120)
        return collections.Counter(r.stdout.split())

    def metric(self, reason: str) -> int:
        rows = self.node.json("metrics", "--format", "json")
        return next((r["packets"] for r in rows if r["reason"] == reason), 0)


@pytest.fixture
def web(pydp_node: PydpNode, request: pytest.FixtureRequest) -> Svc:
    """Function scope: three backends web1..3 and the service "web" (port 80) on the
    default bridge network; Maglev unless the test is parametrized with ``lb``."""
    for name in BACKENDS:
        serve(pydp_node, name)
    for name in BACKENDS:
        wait_listening(pydp_node, name)
    args = [a for name in BACKENDS for a in ("--backend", name)]
    lb = getattr(request, "param", "maglev")
    pydp_node(
        "service", "create", "web", "--network", "bridge", "--port", "80/tcp", "--lb", lb,
        *args,
    )  # fmt: skip
    vip = pydp_node.json("service", "inspect", "web")[0]["VIP"]
    return Svc(pydp_node, vip)


@pytest.mark.parametrize("web", ["maglev", "random"], indirect=True)
def test_connections_spread_over_every_backend(web: Svc) -> None:
    """60 connections to the VIP from one client reach all three backends (Maglev by the
    flow's hash, the source port varying; random by a random slot), none fails."""
    before = web.metric("REASON_LB")
    got = web.ask(60)
    assert set(got) == set(BACKENDS), got
    assert min(got.values()) >= 5, got
    assert web.metric("REASON_LB") > before


def test_added_backend_takes_new_connections_removed_one_none(web: Svc) -> None:
    """An added backend takes new connections at once; a removed one takes none at once."""
    serve(web.node, "web4")
    wait_listening(web.node, "web4")
    web.node("service", "update", "web", "--backend-add", "web4")
    got = web.ask(40)
    assert "web4" in got and "failed" not in got, got
    web.node("service", "update", "web", "--backend-rm", "web1")
    got = web.ask(40)
    assert "web1" not in got and "failed" not in got, got


HOLD = """
import pathlib, socket, sys, time
vip, d = sys.argv[1], pathlib.Path(sys.argv[2])
s = socket.create_connection((vip, 80), timeout=10)
f = s.makefile("rw")
print(f.readline().strip(), flush=True)
for step in range(1, 4):
    deadline = time.monotonic() + 30
    while not (d / str(step)).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        f.write(f"ping{step}\\n")
        f.flush()
        print(f.readline().strip() or "closed", flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
        break
"""


def hold(web: Svc, tmp_path: Path) -> tuple[Background, str]:
    """A client container holding one connection to the VIP; returns its process and the
    backend it got."""
    web.node("run", "--name", "client", "-d", "--", "sleep", "300")
    netns = web.node.json("sandbox", "inspect", "client")[0]["Netns"]
    proc = web.node.host.popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", HOLD, web.vip, str(tmp_path)]
    )
    deadline = time.monotonic() + 10
    while not proc.output().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    backend = proc.output().split()[0]
    assert backend in BACKENDS
    return proc, backend


def step(proc: Background, tmp_path: Path, n: int) -> str:
    """Let the holder send ping<n>; return the line it printed for it."""
    (tmp_path / str(n)).touch()
    deadline = time.monotonic() + 10
    while len(proc.output().split()) < n + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc.output().split()[n]


def test_live_connection_keeps_its_backend_until_it_is_removed(web: Svc, tmp_path: Path) -> None:
    """A held connection keeps its backend while another is added and another removed
    (conntrack remembers it); when its own backend is removed, its next segment is reset."""
    proc, mine = hold(web, tmp_path)
    serve(web.node, "web4")
    wait_listening(web.node, "web4")
    web.node("service", "update", "web", "--backend-add", "web4")
    assert step(proc, tmp_path, 1) == "ping1"
    other = next(b for b in BACKENDS if b != mine)
    web.node("service", "update", "web", "--backend-rm", other)
    assert step(proc, tmp_path, 2) == "ping2"
    web.node("service", "update", "web", "--backend-rm", mine)
    assert step(proc, tmp_path, 3) == "ConnectionResetError"


def test_drained_backend_keeps_its_live_connection(web: Svc, tmp_path: Path) -> None:
    """--drain: the removed backend takes no new connection, its live one goes on."""
    proc, mine = hold(web, tmp_path)
    web.node("service", "update", "web", "--backend-rm", mine, "--drain")
    assert step(proc, tmp_path, 1) == "ping1"
    got = web.ask(30)
    assert mine not in got and "failed" not in got, got
    assert step(proc, tmp_path, 2) == "ping2"


def test_backend_reaches_its_own_service(web: Svc) -> None:
    """Hairpin: a backend connecting to its own service's VIP is answered by some backend
    (itself included: it then sees the gateway as the peer, not its own address)."""
    got = web.ask(30, client="web1")
    assert set(got) <= set(BACKENDS) and "web1" in got, got


def test_other_networks_do_not_reach_the_vip(web: Svc) -> None:
    """A container on another network gets no answer from the VIP (isolation)."""
    web.node("network", "create", "--subnet", "10.77.0.0/24", "other")
    r = web.node(
        "run", "--rm", "--network", "other", "--",
        "socat", "-T1", "-", f"TCP:{web.vip}:80,connect-timeout=1",
        check=False,
    )  # fmt: skip
    assert r.returncode != 0 and "web" not in r.stdout


UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], 53))
try:
    s.send(b"q")
    print(s.recv(100).decode().strip())
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
"""


UDP_SERVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
while True:
    _, peer = s.recvfrom(100)
    s.sendto(sys.argv[1].encode(), peer)
"""


def test_service_without_backends_refuses_tcp_and_udp(pydp_node: PydpNode) -> None:
    """No backends: TCP to the VIP gets a reset (connection refused at once), UDP an ICMP
    port unreachable (ECONNREFUSED on the socket), counted DROP_LB_NO_BACKEND."""
    pydp_node(
        "service", "create", "empty", "--network", "bridge", "--port", "80/tcp",
        "--port", "53/udp",
    )  # fmt: skip
    vip = pydp_node.json("service", "inspect", "empty")[0]["VIP"]
    svc = Svc(pydp_node, vip)
    before = svc.metric("DROP_LB_NO_BACKEND")
    r = pydp_node(
        "run", "--rm", "--", "socat", "-T2", "-", f"TCP:{vip}:80,connect-timeout=2",
        check=False,
    )  # fmt: skip
    assert r.returncode != 0 and "Connection refused" in r.stderr, r.stderr
    r = pydp_node("run", "--rm", "--", sys.executable, "-c", UDP_ASK, vip)
    assert r.stdout.strip() == "refused"
    assert svc.metric("DROP_LB_NO_BACKEND") >= before + 2


def test_udp_service_spreads_datagrams_by_flow(pydp_node: PydpNode) -> None:
    """A UDP service: each client socket (a flow) is answered by one backend; many flows
    reach every backend."""
    for name in BACKENDS:
        pydp_node(
            "run", "--name", name, "-d", "--",
            sys.executable, "-c", UDP_SERVE, name,
        )  # fmt: skip
    for name in BACKENDS:
        wait_listening(pydp_node, name, 53, "u")
    args = [a for name in BACKENDS for a in ("--backend", name)]
    pydp_node("service", "create", "dns", "--network", "bridge", "--port", "53/udp", *args)
    vip = pydp_node.json("service", "inspect", "dns")[0]["VIP"]
    loop = f"for i in $(seq 40); do {sys.executable} -c '{UDP_ASK}' {vip}; done"
    r = pydp_node("run", "--rm", "--", "sh", "-c", loop, timeout=120)
    got = collections.Counter(r.stdout.split())
    assert set(got) == set(BACKENDS), got


def test_published_service_from_another_host(world: World) -> None:  # noqa: F811
    """--publish 8080:80: connections from another host to the uplink's address spread over
    the service's backends, through TC and, once on, through the uplink's XDP program."""
    node = world.node
    for name in BACKENDS:
        serve(node, name)
    for name in BACKENDS:
        wait_listening(node, name)
    args = [a for name in BACKENDS for a in ("--backend", name)]
    node(
        "service", "create", "web", "--network", "bridge", "--port", "80/tcp",
        "--publish", "8080:80", *args,
    )  # fmt: skip
    loop = (
        f"for i in $(seq 30); do socat -T2 - TCP:{UPLINK}:8080,connect-timeout=2 </dev/null"
        " || echo failed; done"
    )
    got = collections.Counter(world.outside.run(["sh", "-c", loop], timeout=120).stdout.split())
    assert set(got) == set(BACKENDS), got
    node("system", "config", "--xdp", "on")
    before = world.metric("REASON_XDP_DNAT")
    got = collections.Counter(world.outside.run(["sh", "-c", loop], timeout=120).stdout.split())
    assert set(got) == set(BACKENDS), got
    assert world.metric("REASON_XDP_DNAT") >= before + 30

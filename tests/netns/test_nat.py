"""NAT through the uplink: masquerade and published ports, with real clients."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pydp.testing import Host, Topology

from .conftest import PydpNode

UPLINK, OUTSIDE = "10.99.0.2", "10.99.0.1"


@dataclass
class World:
    node: PydpNode
    outside: Host

    def metric(self, reason: str) -> int:
        rows = self.node.json("metrics", "--format", "json")
        return next((r["packets"] for r in rows if r["reason"] == reason), 0)


@pytest.fixture
def world(topology: Topology, pydp_node: PydpNode) -> Iterator[World]:
    """Function scope, depends on topology and pydp_node: the pydp host's uplink eth0
    (10.99.0.2/24, default route via 10.99.0.1) and an outside host 10.99.0.1 on the fabric,
    which has no route to any container subnet."""
    pydp_node.host.connect_fabric(f"{UPLINK}/24", ifname="eth0")
    pydp_node.host.ip("route", "add", "default", "via", OUTSIDE)
    outside = topology.add_host("outside")
    outside.connect_fabric(f"{OUTSIDE}/24")
    pydp_node("system", "reconcile")  # the datapath loaded, from_netdev on the uplink
    yield World(pydp_node, outside)


ECHO_PEER = ["socat", "TCP-LISTEN:8000,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR"]


def test_masquerade_tcp_to_outside(world: World) -> None:
    """A container reaches a server outside the host, which sees the uplink's address."""
    server = world.outside.popen(ECHO_PEER)
    server.wait_port(8000)
    before = world.metric("REASON_SNAT")
    r = world.node("run", "--rm", "--", "socat", "-T2", "-", f"TCP:{OUTSIDE}:8000")
    assert r.stdout.strip() == UPLINK
    assert world.metric("REASON_SNAT") > before


def test_masquerade_bulk_download(world: World) -> None:
    """A 20 MB TCP download from outside into a container completes (iperf3 -R)."""
    server = world.outside.popen(["iperf3", "-s", "-1", "-B", OUTSIDE])
    server.wait_port(5201)
    r = world.node("run", "--rm", "--", "iperf3", "-c", OUTSIDE, "-R", "-n", "20M", timeout=60)
    assert "receiver" in r.stdout


def test_masquerade_checksums_completed_by_the_uplink(world: World) -> None:
    """A container's TCP leaves with checksum offload (CHECKSUM_PARTIAL: the field holds the
    pseudo-header seed). With the uplink's TX checksumming off, the kernel completes the
    checksum from the translated seed as the packet leaves; the outside host verifies it, so
    the echo and a 5 MB upload (GSO segments) arrive only if SNAT updated the seed right."""
    world.node.host.run(["ethtool", "-K", "eth0", "tx", "off"])
    server = world.outside.popen(ECHO_PEER)
    server.wait_port(8000)
    r = world.node("run", "--rm", "--", "socat", "-T2", "-", f"TCP:{OUTSIDE}:8000")
    assert r.stdout.strip() == UPLINK
    iperf = world.outside.popen(["iperf3", "-s", "-1", "-B", OUTSIDE])
    iperf.wait_port(5201)
    r = world.node("run", "--rm", "--", "iperf3", "-c", OUTSIDE, "-n", "5M", timeout=60)
    assert "receiver" in r.stdout
    errors = world.outside.run(["nstat", "-az", "TcpInCsumErrors", "UdpInCsumErrors"])
    assert [line.split()[1] for line in errors.stdout.splitlines()[1:]] == ["0", "0"]


HOLD_PORT = """
import pathlib, socket, sys, time
out, up, go = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
s = socket.create_connection((out, 8000), timeout=20, source_address=(up, 40000))
f = s.makefile("rw")
print(f.readline().strip(), flush=True)
deadline = time.monotonic() + 20
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
f.write("still-here\\n")
f.flush()
print(f.readline().strip(), flush=True)
"""


def test_masquerade_skips_a_port_the_host_holds(world: World, tmp_path: Path) -> None:
    """The NAT range is the host's own ephemeral range: a container's connection from port
    40000 to a peer the host is connected to from UPLINK:40000 takes another port of the
    range, and the host's connection keeps working."""
    server = world.outside.popen(
        ["socat", "TCP-LISTEN:8000,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERPORT; cat"]
    )
    server.wait_port(8000)
    go = tmp_path / "go"
    holder = world.node.host.popen([sys.executable, "-c", HOLD_PORT, OUTSIDE, UPLINK, str(go)])
    deadline = time.monotonic() + 10
    while "40000" not in holder.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    r = world.node("run", "--rm", "--", "socat", "-T2", "-", f"TCP:{OUTSIDE}:8000,sourceport=40000")
    port = int(r.stdout.split()[0])
    lo, hi = (int(p) for p in world.node("system", "config").stdout.split()[1].split("-"))
    assert port != 40000 and lo <= port <= hi
    go.touch()
    assert holder.wait(timeout=10) == 0
    assert holder.output().split() == ["40000", "still-here"]


def test_ttl_1_from_a_container_gets_time_exceeded(world: World) -> None:
    """The host is a container's first router: TTL 1 toward the outside is answered with an
    ICMP time exceeded from the gateway (traceroute's first hop), not dropped in silence."""
    before = world.metric("REASON_TTL_TO_STACK")
    r = world.node("run", "--rm", "--", "ping", "-n", "-c1", "-t1", "-W2", OUTSIDE, check=False)
    assert r.returncode == 1
    assert "Time to live exceeded" in r.stdout
    gateway = world.node.json("network", "inspect", "bridge")[0]["IPAM"]["Config"][0]["Gateway"]
    assert f"From {gateway} " in r.stdout
    assert world.metric("REASON_TTL_TO_STACK") > before


def test_masquerade_off_per_network(world: World) -> None:
    """enable_ip_masquerade=false: the packet leaves unmasqueraded, so the outside host (which
    has no route back) never answers."""
    world.node(
        "network",
        "create",
        "--subnet",
        "10.61.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "nomasq",
    )
    server = world.outside.popen(ECHO_PEER)
    server.wait_port(8000)
    r = world.node(
        "run",
        "--rm",
        "--network",
        "nomasq",
        "--",
        "socat",
        "-T1",
        "-",
        f"TCP:{OUTSIDE}:8000,connect-timeout=1",
        check=False,
    )
    assert r.returncode != 0


def run_web(world: World, answer: str) -> None:
    """Sandbox "web": a TCP server on port 80 answering with socat's ``answer`` (a
    SYSTEM: address), published as 8080."""
    world.node(
        "run", "--name", "web", "-p", "8080:80", "-d", "--",
        "socat", "TCP-LISTEN:80,reuseaddr,fork", answer,
    )  # fmt: skip


def test_published_tcp_port_from_another_host(world: World) -> None:
    """-p 8080:80 makes a container's HTTP server reachable at the uplink's address."""
    run_web(world, "SYSTEM:echo hello-from-web")
    assert "8080:80/tcp" in world.node.json("sandbox", "inspect", "web")[0]["Ports"]
    world.node(
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do "
        "ss -ltn | grep -q :80 && exit 0; sleep 0.2; done; exit 1",
    )
    before = world.metric("REASON_DNAT") + world.metric("REASON_XDP_DNAT")
    r = world.outside.run(["socat", "-T2", "-", f"TCP:{UPLINK}:8080"])
    assert r.stdout.strip() == "hello-from-web"
    # TC's from_netdev or, once xdp_uplink runs on the uplink, its fast path
    assert world.metric("REASON_DNAT") + world.metric("REASON_XDP_DNAT") > before


def run_udp_echo(world: World) -> None:
    """Sandbox "dns": a UDP echo server on port 53, published as 5353."""
    world.node(
        "run",
        "--name",
        "dns",
        "-p",
        "5353:53/udp",
        "-d",
        "--",
        "socat",
        "UDP-RECVFROM:53,fork",
        "SYSTEM:cat",
    )


def test_published_udp_echo(world: World) -> None:
    """A UDP echo server behind -p 5353:53/udp answers the outside host."""
    run_udp_echo(world)
    world.node(
        "exec",
        "dns",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do "
        "ss -lun | grep -q :53 && exit 0; sleep 0.2; done; exit 1",
    )
    r = world.outside.run(["sh", "-c", f"echo ping-udp | socat -T2 - UDP:{UPLINK}:5353"])
    assert r.stdout.strip() == "ping-udp"


UDP_REFUSED = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], 9999))
s.send(b"x")
try:
    s.recv(10)
except ConnectionRefusedError:
    print("refused")
"""


def test_icmp_port_unreachable_translated_back(world: World) -> None:
    """The outside host's ICMP port unreachable for a masqueraded UDP packet reaches the
    container's socket as ECONNREFUSED (outer and quoted headers translated back)."""
    before = world.metric("REASON_REV_NAT_ICMP")
    r = world.node("run", "--rm", "--", sys.executable, "-c", UDP_REFUSED, OUTSIDE)
    assert r.stdout.strip() == "refused"
    assert world.metric("REASON_REV_NAT_ICMP") > before


def test_publish_refused_when_port_in_use(world: World) -> None:
    """A host port held by a process on the host, or published already, is refused."""
    holder = world.node.host.popen(["socat", "TCP-LISTEN:9090,reuseaddr", "-"])
    holder.wait_port(9090)
    before = world.node.snapshot()
    r = world.node("run", "-p", "9090:80", "--", "true", check=False)
    assert (r.returncode, r.stderr) == (
        1,
        "Error: --publish: host port 9090/tcp is in use by a process on this host\n",
    )
    r = world.node("run", "-p", "80:", "--", "true", check=False)
    assert (r.returncode, r.stderr) == (
        1,
        'Error: --publish: expected [IP:]HOST_PORT:CONTAINER_PORT[/PROTO], got "80:"\n',
    )
    assert world.node.snapshot() == before


def wait_listening(world: World, sandbox: str, port: int, proto: str = "t") -> None:
    world.node(
        "exec",
        sandbox,
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do "
        f"ss -l{proto}n | grep -q :{port} && exit 0; sleep 0.2; done; exit 1",
    )


def test_published_ports_answered_through_xdp(world: World) -> None:
    """xdp_uplink runs on the uplink and translates published TCP and UDP ports: the outside
    host's frames arrive with checksum offload (a veth), which XDP must complete itself.
    On a veth uplink XDP is off by default (auto) and taken off again with --xdp off."""
    link = ["ip", "link", "show", "eth0"]
    assert "prog/xdp" not in world.node.host.run(link).stdout  # auto: a veth stays on TC
    assert world.node("system", "config", "--xdp", "on").stdout.endswith("xdp on\n")
    assert "prog/xdp" in world.node.host.run(link).stdout
    run_web(world, "SYSTEM:echo hello-xdp")
    run_udp_echo(world)
    wait_listening(world, "web", 80)
    wait_listening(world, "dns", 53, "u")
    before = world.metric("REASON_XDP_DNAT")
    r = world.outside.run(["socat", "-T2", "-", f"TCP:{UPLINK}:8080"])
    assert r.stdout.strip() == "hello-xdp"
    after_tcp = world.metric("REASON_XDP_DNAT")
    assert after_tcp > before
    r = world.outside.run(["sh", "-c", f"echo ping-xdp | socat -T2 - UDP:{UPLINK}:5353"])
    assert r.stdout.strip() == "ping-xdp"
    assert world.metric("REASON_XDP_DNAT") > after_tcp


def test_published_port_from_the_host_itself(world: World) -> None:
    """The host's own processes reach a published port at 127.0.0.1 and at the uplink's
    address (cgroup connect4/sendmsg4/recvmsg4 hooks: no proxy process), TCP and UDP."""
    node = world.node
    node(
        "run",
        "--name",
        "web",
        "-p",
        "8080:80",
        "-p",
        "5353:53/udp",
        "-d",
        "--",
        "sh",
        "-c",
        "socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:'echo hello-web' &"
        " exec socat UDP-RECVFROM:53,fork SYSTEM:cat",
    )
    wait_listening(world, "web", 80)
    wait_listening(world, "web", 53, "u")
    for addr in ("127.0.0.1", UPLINK):
        r = node.host.run(["socat", "-T2", "-", f"TCP:{addr}:8080"])
        assert r.stdout.strip() == "hello-web", addr
    r = node.host.run(["sh", "-c", "echo ping-udp | socat -T2 - UDP:127.0.0.1:5353"])
    assert r.stdout.strip() == "ping-udp"
    listening = node.host.run(["ss", "-Htlnu"]).stdout
    assert ":8080 " not in listening and ":5353 " not in listening  # no userland proxy


def test_nat_port_exhaustion_is_a_counted_drop(world: World) -> None:
    """With one masquerade port, a third flow from the same source port to the same place
    finds none: a counted DROP_NAT_NO_PORT, and pydp keeps working."""
    node = world.node
    out = node("system", "config", "--nat-ports", "40000-40000").stdout
    assert out == "nat-ports 40000-40000\nxdp auto\n"
    r = node("system", "config", "--nat-ports", "9-8", check=False)
    assert (r.returncode, r.stderr) == (
        1,
        'Error: --nat-ports: expected FIRST-LAST, ports 1-65535, got "9-8"\n',
    )
    world.outside.popen(["socat", "UDP-RECVFROM:7,fork", "SYSTEM:cat"]).wait_port(7, "udp")
    send = ["sh", "-c", f"echo x | socat -T1 - UDP:{OUTSIDE}:7,sourceport=5000"]
    # the sandboxes stay (no --rm), and so do their flows' NAT entries: a keeps port 5000,
    # b takes the range's only port, c finds none
    for name in ("a", "b"):
        assert node("run", "--name", name, "--", *send).stdout.strip() == "x"
    before = world.metric("DROP_NAT_NO_PORT")
    node("run", "--name", "c", "--", *send, check=False)
    assert world.metric("DROP_NAT_NO_PORT") > before
    other = ["sh", "-c", f"echo y | socat -T1 - UDP:{OUTSIDE}:7,sourceport=5001"]
    assert node("run", "--rm", "--", *other).stdout.strip() == "y"  # still working


def test_udp_published_port_moves_to_new_container_at_once(world: World) -> None:
    """A client that keeps its UDP 5-tuple reaches the new container as soon as the port is
    published there: the old container's connection state went with it (Docker's stale UDP
    conntrack problem)."""
    node = world.node
    for name in ("a", "b"):
        if name == "b":
            node("sandbox", "rm", "a")
        node(
            "run",
            "--name",
            name,
            "-p",
            "5353:53/udp",
            "-d",
            "--",
            "socat",
            "UDP-RECVFROM:53,fork",
            f"SYSTEM:echo from-{name}",
        )
        wait_listening(world, name, 53, "u")
        with world.outside.enter(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((OUTSIDE, 40404))  # the same client tuple for both containers
            s.settimeout(0.2)
            answers = []
            for _ in range(10):  # the client keeps sending, for 2 s at most
                s.sendto(b"q\n", (UPLINK, 5353))
                try:
                    answers.append(s.recv(100).strip().decode())
                    break
                except TimeoutError:
                    continue
            assert answers == [f"from-{name}"]


def test_published_port_hairpin_sees_gateway(world: World) -> None:
    """A container reaches a published port of its own host at the uplink's address; the
    backend sees the gateway address of its network (routable), as with Docker's hairpin."""
    run_web(world, "SYSTEM:echo $SOCAT_PEERADDR")
    wait_listening(world, "web", 80)
    before = world.metric("REASON_HAIRPIN")
    r = world.node("run", "--rm", "--", "socat", "-T2", "-", f"TCP:{UPLINK}:8080")
    assert r.stdout.strip() == "172.17.0.1"
    assert world.metric("REASON_HAIRPIN") > before
    assert world.metric("REASON_HAIRPIN_REPLY") > 0


def test_published_http_with_curl(world: World, tmp_path: Path) -> None:
    """curl fetches a page from busybox httpd behind -p 8081:80: from another host, from the
    host itself (127.0.0.1) and from a sibling container (hairpin at the uplink's address)."""
    (tmp_path / "index.html").write_text("hello over http\n")
    world.node(
        "run",
        "--name",
        "www",
        "-p",
        "8081:80",
        "-d",
        "--",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        str(tmp_path),
    )
    wait_listening(world, "www", 80)
    curl = ["curl", "-sS", "--max-time", "5"]
    assert world.outside.run([*curl, f"http://{UPLINK}:8081/"]).stdout == "hello over http\n"
    assert world.node.host.run([*curl, "http://127.0.0.1:8081/"]).stdout == "hello over http\n"
    r = world.node("run", "--rm", "--", *curl, f"http://{UPLINK}:8081/")
    assert r.stdout == "hello over http\n"

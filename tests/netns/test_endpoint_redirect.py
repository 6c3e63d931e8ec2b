"""Two containers on one host talk through from_container's redirect, not the host's stack."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netaddr import IPAddress

from pydp.datapath import Datapath
from pydp.loader import detach_tc, tc_attached
from pydp.testing import Container, Host, Topology

BRIDGE = "pydp0"


@dataclass
class Pair:
    host: Host
    c1: Container
    c2: Container
    dp: Datapath

    def plug(self) -> None:
        with self.host.enter():
            for c in (self.c1, self.c2):
                assert c.address is not None
                self.dp.plug(c.address.ip, c.host_ifindex, c.mac)

    def unplug(self) -> None:
        with self.host.enter():
            for c in (self.c1, self.c2):
                assert c.address is not None
                self.dp.unplug(c.address.ip, c.host_ifindex)

    def redirects(self) -> int:
        return self.dp.metrics.counter("REASON_REDIRECT").packets


@pytest.fixture(scope="module")
def pair(topology_module: Topology, bpffs: Path) -> Iterator[Pair]:
    """Module scope, depends on topology_module and bpffs: a host whose bridge joins two
    containers (10.0.0.2, 10.0.0.3), both plugged into the datapath."""
    host = topology_module.add_host("h1")
    host.add_bridge(BRIDGE, "10.0.0.1/24")
    c1 = host.add_container("c1", "10.0.0.2/24", gateway="10.0.0.1", bridge=BRIDGE)
    c2 = host.add_container("c2", "10.0.0.3/24", gateway="10.0.0.1", bridge=BRIDGE)
    dp = Datapath(root=bpffs / "redirect")
    p = Pair(host, c1, c2, dp)
    p.plug()
    try:
        yield p
    finally:
        dp.destroy()


def capture(host: Host, ifname: str) -> tuple[object, Path]:
    """Start tcpdump on ifname for the containers' IP packets that the host sends out of it
    (towards the container); the host's own multicast (IGMP) is not theirs."""
    out = Path(f"/tmp/pydp-cap-{host.netns}-{ifname}.pcap")
    bg = host.popen(
        [
            "tcpdump",
            "-i",
            ifname,
            "-Q",
            "out",
            "-n",
            "-U",
            "-w",
            str(out),
            "ip host 10.0.0.2 and ip host 10.0.0.3",
        ]
    )
    deadline = time.monotonic() + 5
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    return bg, out


def captured(host: Host, bg: object, out: Path) -> list[str]:
    """The IP packets in a capture, one tshark summary line each."""
    time.sleep(0.2)
    bg.stop()  # type: ignore[attr-defined]
    try:
        r = host.run(["tshark", "-r", str(out)], check=True)
        return [line.strip() for line in r.stdout.splitlines() if line.strip()]
    finally:
        out.unlink(missing_ok=True)


def test_redirect_icmp_between_containers(pair: Pair) -> None:
    """Ping between two containers works and every echo and reply is redirected."""
    before = pair.redirects()
    pair.c1.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.3"])
    assert pair.redirects() - before >= 6


def test_redirect_tcp_transfer_between_containers(pair: Pair) -> None:
    """An iperf3 TCP transfer of 20 MB between containers completes through the redirect."""
    server = pair.c2.popen(["iperf3", "-s", "-1", "-B", "10.0.0.3"])
    server.wait_port(5201)
    before = pair.redirects()
    r = pair.c1.run(["iperf3", "-c", "10.0.0.3", "-n", "20M", "-J"], timeout=60)
    server.stop()
    assert '"bytes":\t20971520' in r.stdout or '"bytes": 20971520' in r.stdout
    assert pair.redirects() - before > 100


def test_redirect_skips_host_stack(pair: Pair) -> None:
    """With from_container attached, captures of what the host sends into either container see
    no IP packet; detached, the same traffic shows up there (the control)."""
    host = pair.host
    caps = [capture(host, c.host_ifname) for c in (pair.c1, pair.c2)]
    pair.c1.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.3"])
    pair.c1.run(["sh", "-c", "echo hi | timeout 3 busybox nc -w1 10.0.0.3 9 || true"])
    seen = [captured(host, bg, out) for bg, out in caps]
    assert seen == [[], []]

    pair.unplug()
    try:
        with host.enter():
            assert tc_attached(pair.c1.host_ifindex, root=pair.dp.root) is None
        caps = [capture(host, c.host_ifname) for c in (pair.c1, pair.c2)]
        pair.c1.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.3"])
        seen = [captured(host, bg, out) for bg, out in caps]
        assert len(seen[0]) >= 3 and len(seen[1]) >= 3
    finally:
        pair.plug()


RAW_SEND = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
s.send(bytes.fromhex(sys.argv[1]))
"""


@pytest.mark.parametrize(
    ("frame_tail", "reason"),
    [
        ("0800", "DROP_INVALID_IP"),  # an Ethernet header alone, typed IPv4
        ("0800" + "45000028000040004006" + "0000", "DROP_INVALID_IP"),  # 12 of 20 IPv4 bytes
        (
            "0800" + "4f000028000040004006" + "00000a0000020a000003" + "00" * 8,
            "DROP_INVALID_IP",
        ),  # ihl 15 with 28 bytes of IPv4
        (
            "0800" + "450000280000400040060000" + "0a0000020a000003" + "9c400050",
            "DROP_INVALID_L4",
        ),  # TCP header cut after 4 bytes
    ],
    ids=["eth only", "truncated ipv4", "ihl past end", "truncated tcp"],
)
def test_redirect_malformed_frames_dropped(pair: Pair, frame_tail: str, reason: str) -> None:
    """Malformed frames sent by a container on its real veth are dropped and counted; the
    truncated-header cases kernel 6.18's test_run refuses are covered here."""
    before = pair.dp.metrics.counter(reason).packets
    dst, src = "ff" * 6, str(pair.c1.mac).replace(":", "").replace("-", "")
    pair.c1.run([sys.executable, "-c", RAW_SEND, dst + src + frame_tail])
    deadline = time.monotonic() + 2
    while pair.dp.metrics.counter(reason).packets == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pair.dp.metrics.counter(reason).packets == before + 1


def test_redirect_survives_datapath_reload(pair: Pair) -> None:
    """A second Datapath on the same root reuses the pinned maps and the pinned program
    (one build, one program for every container); another build (here another load-time
    setting) is loaded, pinned in place of the first and replaces it atomically: entries
    survive and traffic keeps flowing."""
    with pair.host.enter():
        old = tc_attached(pair.c1.host_ifindex, root=pair.dp.root)
        dp2 = Datapath(root=pair.dp.root)
        try:
            assert dp2.from_container.id == pair.dp.from_container.id
            assert IPAddress("10.0.0.3") in dp2.endpoints
            dp2.plug(IPAddress("10.0.0.2"), pair.c1.host_ifindex, pair.c1.mac)
            same = tc_attached(pair.c1.host_ifindex, root=pair.dp.root)
        finally:
            dp2.close()
        dp3 = Datapath(root=pair.dp.root, redirect_peer=False)
        try:
            assert dp3.from_container.id != pair.dp.from_container.id
            dp3.plug(IPAddress("10.0.0.2"), pair.c1.host_ifindex, pair.c1.mac)
            new = tc_attached(pair.c1.host_ifindex, root=pair.dp.root)
        finally:
            dp3.close()
    assert old is not None and same is not None and new is not None
    assert same.prog_id == old.prog_id and new.prog_id != old.prog_id
    assert len(list(pair.dp.root.glob("prog_from_container_*"))) == 1
    before = pair.redirects()
    pair.c1.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.3"])
    assert pair.redirects() - before >= 4


def test_detach_twice_succeeds(pair: Pair) -> None:
    """Detaching what is already gone succeeds and reports that nothing was there."""
    with pair.host.enter():
        pair.host.ip("link", "add", "pdx0", "type", "veth", "peer", "name", "pdx1")
        idx = pair.host.link("pdx0").ifindex
        assert detach_tc(idx, root=pair.dp.root) is False
        pair.dp.plug(IPAddress("10.0.0.99"), idx, pair.c1.mac)
        assert detach_tc(idx, root=pair.dp.root) is True
        assert detach_tc(idx, root=pair.dp.root) is False
        pair.dp.endpoints.discard(IPAddress("10.0.0.99"))
        pair.host.ip("link", "del", "pdx0")

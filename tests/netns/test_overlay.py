"""Overlay networks across hosts: pydp agents on two hosts sharing an etcd, containers on
one overlay network reaching each other through VXLAN, a node's failure seen by the other."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydp.testing import Topology
from pydp.testing.cluster import Cluster, pydp_cluster, wait_for


@pytest.fixture
def cluster(topology: Topology, bpffs: Path, tmp_path: Path) -> Iterator[Cluster]:
    """Function scope: an etcd on the fabric and two pydp hosts h1, h2 running agents."""
    with pydp_cluster(topology, bpffs, tmp_path, hosts=("h1", "h2")) as c:
        yield c


def test_containers_on_two_hosts_talk_over_the_overlay(cluster: Cluster) -> None:
    """An overlay network made on h1 is seen by h2; a container on each reaches the other
    (ICMP, TCP) through the agents' tunnels; killing h2's agent revokes its lease and h1
    drops h2's endpoints."""
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.70.0.0/24", "ov")
    cluster("h2", "run", "--name", "c2", "--network", "ov", "-d", "--",
            "socat", "TCP-LISTEN:7000,reuseaddr,fork", "SYSTEM:echo from-h2")  # fmt: skip
    cluster("h1", "run", "--name", "c1", "--network", "ov", "-d", "--", "sleep", "300")
    c2 = cluster.json("h1", "sandbox", "inspect", "c2")[0]  # type: ignore[index]
    addr = next(iter(c2["Networks"].values()))["IPAddress"]  # type: ignore[index]

    assert wait_for(lambda: cluster.reaches("h1", "c1", addr), 20)
    r = cluster("h1", "exec", "c1", "--", "socat", "-T2", "-", f"TCP:{addr}:7000")
    assert r.stdout.strip() == "from-h2"  # type: ignore[attr-defined]


def test_a_bulk_stream_is_decapsulated_whole_and_arrives_intact(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A 16 MiB TCP stream from h1 to h2, offloads on as veths have them: h2's uplink
    decapsulates the super-frames itself (REASON_TUNNEL_DECAP counts every byte, in frames
    larger than the MTU) and the bytes arrive unchanged."""
    payload, digest = tmp_path / "payload", tmp_path / "received.sha256"
    payload.write_bytes(os.urandom(16 << 20))
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.76.0.0/24", "ov")
    sink = f"socat -u TCP-LISTEN:7001 - | sha256sum > {digest}.part && mv {digest}.part {digest}"
    cluster("h2", "run", "--name", "sink", "--network", "ov", "-d", "--", "sh", "-c", sink)
    cluster("h1", "run", "--name", "src", "--network", "ov", "-d", "--", "sleep", "300")
    addr = cluster.ip_of("sink")
    assert wait_for(lambda: cluster.reaches("h1", "src", addr), 20)
    before = cluster.nodes["h2"].counters().get("REASON_TUNNEL_DECAP")
    cluster("h1", "exec", "src", "--", "socat", "-u", f"OPEN:{payload}", f"TCP:{addr}:7001")
    assert wait_for(digest.exists, 20), "the sink never finished"
    after = cluster.nodes["h2"].counters()["REASON_TUNNEL_DECAP"]
    packets = after.packets - (before.packets if before else 0)
    nbytes = after.bytes - (before.bytes if before else 0)
    assert digest.read_text().split()[0] == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert nbytes >= payload.stat().st_size, (packets, nbytes)
    assert nbytes / packets > 1500, f"{packets} frames of {nbytes} bytes: no super-frame"


def test_node_failure_removes_its_endpoints_and_isolation_holds(cluster: Cluster) -> None:
    """Two overlay networks with one subnet stay apart across hosts: on h2 r2 (red) and b2
    (blue) get the same address, on h1 r1 and b1 another one; each client reaches its own
    network's server at that address. h2's agent killed (no revoke): within its lease's
    TTL (10 s) + 1 s h2 is down in `node ls` and h1 no longer tunnels to it."""
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.71.0.0/24", "red")
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.71.0.0/24", "blue")
    for name, net in (("r2", "red"), ("b2", "blue")):
        cluster("h2", "run", "--name", name, "--network", net, "-d", "--",
                "socat", "TCP-LISTEN:7000,reuseaddr,fork", f"SYSTEM:echo {net}")  # fmt: skip
    for name, net in (("r1", "red"), ("b1", "blue")):
        cluster("h1", "run", "--name", name, "--network", net, "-d", "--", "sleep", "300")
    addr = cluster.ip_of("r2")
    assert cluster.ip_of("b2") == addr and cluster.ip_of("r1") == cluster.ip_of("b1")

    def ask(client: str) -> str:
        r = cluster("h1", "exec", client, "--", "socat", "-T2", "-", f"TCP:{addr}:7000",
                    check=False)  # fmt: skip
        return r.stdout.strip()

    assert wait_for(lambda: ask("r1") == "red", 20)
    assert wait_for(lambda: ask("b1") == "blue", 20)
    assert {ask("r1"), ask("b1")} == {"red", "blue"}

    assert cluster.reaches("h1", "r1", addr)
    os.killpg(cluster.agents["h2"].pid, signal.SIGKILL)
    killed = time.monotonic()

    def h2_down() -> bool:
        rows = cluster.json("h1", "node", "ls", "--format", "json")
        return any(r["name"] == "h2" and r["state"] == "down" for r in rows)

    assert wait_for(h2_down, 15)
    assert wait_for(lambda: not cluster.reaches("h1", "r1", addr), 5)
    assert time.monotonic() - killed < 10 + 1 + 3  # TTL + 1 s, and the CLI's own time


def test_overlapping_networks_masquerade_one_tuple_apart(
    cluster: Cluster, topology: Topology
) -> None:
    """red and blue share a subnet: r (red) and b (blue) on h1 get the same address and
    send UDP from the same source port to the same outside server. Each gets its own
    answer: the conntrack key of a container's packet carries its network's scope."""
    for net in ("red", "blue"):
        cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.78.0.0/24", net)
    cluster("h1", "run", "--name", "r", "--network", "red", "-d", "--", "sleep", "300")
    cluster("h1", "run", "--name", "b", "--network", "blue", "-d", "--", "sleep", "300")
    assert cluster.ip_of("r") == cluster.ip_of("b")
    ext = topology.add_host("ext")
    ext.connect_fabric("10.97.0.50/24", ifname="eth0")
    echo = ext.popen(["socat", "UDP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"])
    echo.wait_port(7000, "udp")

    def ask(sandbox: str, word: str) -> str:
        send = f"echo {word} | socat -T1 - UDP:10.97.0.50:7000,sourceport=40000"
        return str(cluster("h1", "exec", sandbox, "--", "sh", "-c", send).stdout).strip()

    assert wait_for(lambda: ask("r", "red") == "red", 10)
    assert ask("b", "blue") == "blue"
    assert ask("r", "red") == "red"
    assert ask("b", "blue") == "blue"


def test_a_plain_linux_vxlan_peer_talks_to_a_pydp_container(
    cluster: Cluster, topology: Topology
) -> None:
    """A host running no pydp, with a kernel vxlan device (the network's VNI, UDP 4789) and
    a static all-zeros FDB entry toward h1, pings a pydp container on h1: its ARP is
    answered through the tunnel, its address learned for the replies; tshark decodes the
    underlay as VXLAN with the network's VNI."""
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.73.0.0/24", "ov")
    cluster("h1", "run", "--name", "c1", "--network", "ov", "-d", "--", "sleep", "300")
    net = cluster.json("h1", "network", "inspect", "ov")[0]  # type: ignore[index]
    vni = net["Options"]["com.docker.network.driver.overlay.vxlanid_list"]  # type: ignore[index]
    c1 = cluster.json("h1", "sandbox", "inspect", "c1")[0]  # type: ignore[index]
    addr = next(iter(c1["Networks"].values()))["IPAddress"]  # type: ignore[index]
    peer = topology.add_host("plain")
    peer.connect_fabric("10.97.0.8/24", ifname="eth0")
    peer.ip_batch(
        [
            f"link add vx0 type vxlan id {vni} dstport 4789 local 10.97.0.8 nolearning",
            "link set vx0 mtu 1450 up",
            "addr add 10.73.0.50/24 dev vx0",
        ]
    )
    peer.run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", "10.97.0.1"])
    capture = peer.popen(
        ["tshark", "-i", "eth0", "-c", "4", "-f", "udp port 4789", "-T", "fields",
         "-e", "vxlan.vni"]
    )  # fmt: skip
    assert wait_for(lambda: "Capture started" in capture.output(), 10), capture.output()
    assert wait_for(lambda: peer.run(["ping", "-c1", "-W1", addr], check=False).returncode == 0, 15)
    peer.run(["ping", "-c2", "-i0.2", "-W1", addr])  # 4 packets at least after the capture began
    assert capture.wait(timeout=10) == 0
    assert set(capture.output().split()[-4:]) == {vni}, capture.output()


def test_a_service_balances_over_backends_on_both_nodes(cluster: Cluster) -> None:
    """A service on an overlay network with a backend on each node: a client on h1 reaches
    both through the VIP (the remote one through the tunnel, its replies given the VIP back
    by h1's from_overlay)."""
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.74.0.0/24", "ov")
    for node, name in (("h1", "w1"), ("h2", "w2")):
        cluster(node, "run", "--name", name, "--network", "ov", "-d", "--",
                "socat", "TCP-LISTEN:80,reuseaddr,fork", f"SYSTEM:echo {name}")  # fmt: skip
    cluster("h1", "service", "create", "web", "--network", "ov", "--port", "80/tcp",
            "--backend", "w1", "--backend", "w2")  # fmt: skip
    vip = cluster.json("h1", "service", "inspect", "web")[0]["VIP"]  # type: ignore[index]
    cluster("h1", "run", "--name", "client", "--network", "ov", "-d", "--", "sleep", "300")
    loop = (
        f"for i in $(seq 30); do socat -T2 - TCP:{vip}:80,connect-timeout=2 </dev/null"
        " || echo failed; done"
    )

    def both() -> bool:
        r = cluster("h1", "exec", "client", "--", "sh", "-c", loop, check=False)
        return set(r.stdout.split()) == {"w1", "w2"}  # type: ignore[attr-defined]

    assert wait_for(both, 30)


def test_agent_restart_does_not_interrupt_a_stream(cluster: Cluster) -> None:
    """An iperf3 stream from h1 to h2 over the overlay goes on while h1's agent is stopped
    and started again (pinned maps, attached programs, the lease outliving the restart)."""
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.75.0.0/24", "ov")
    cluster("h2", "run", "--name", "srv", "--network", "ov", "-d", "--", "iperf3", "-s", "-1")
    cluster("h1", "run", "--name", "cli", "--network", "ov", "-d", "--", "sleep", "300")
    srv = cluster.json("h1", "sandbox", "inspect", "srv")[0]  # type: ignore[index]
    addr = next(iter(srv["Networks"].values()))["IPAddress"]  # type: ignore[index]
    netns = cluster.json("h1", "sandbox", "inspect", "cli")[0]["Netns"]  # type: ignore[index]
    assert wait_for(lambda: cluster.reaches("h1", "cli", addr), 20)
    h1 = cluster.nodes["h1"]
    stream = h1.host.popen(["ip", "netns", "exec", netns, "iperf3", "-c", addr, "-t", "8", "-J"])
    time.sleep(2)
    cluster.restart_agent("h1")
    assert stream.wait(timeout=30) == 0, stream.output()
    result = json.loads(stream.output()[stream.output().index("{") :])
    assert "error" not in result
    assert result["end"]["sum_received"]["bytes"] > 0
    intervals = [i["sum"]["bytes"] for i in result["intervals"]]
    assert len(intervals) >= 8 and all(b > 0 for b in intervals), intervals

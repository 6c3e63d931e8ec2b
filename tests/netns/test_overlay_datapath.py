"""The overlay datapath on its own: two hosts on a fabric, each with pydp's maps and
programs set by hand (no store), containers reaching each other through the flow-based
VXLAN device, the VNI checked on receive, the wire seen by tshark."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netaddr import EUI, IPAddress

from pydp.datapath import Datapath
from pydp.datapath_nat import NatDatapath
from pydp.datapath_overlay import VXLAN_NAME, VXLAN_OWNER, OverlayDatapath
from pydp.loader import remove_root
from pydp.maps import Endpoint, HostConfig, NetworkInfo
from pydp.maps.endpoint import Scoped
from pydp.net import NetHost
from pydp.testing import Container, Host, Topology
from pydp.testing.cluster import wait_for

VNI_A, VNI_B = 4096, 4097
ROUTER = "02:42:00:00:10:00"  # the overlay networks' router MAC
REMOTE = 2  # ENDPOINT_F_REMOTE
MTU = 1450  # the fabric's 1500 - 50


@dataclass
class Node:
    host: Host
    underlay: str
    root: Path

    def counters(self) -> dict[str, int]:
        with self.host.enter(), Datapath(root=self.root) as dp:
            return {k: c.packets for k, c in dp.counters().items()}


def wire(
    node: Node, containers: list[tuple[Container, int]], remote: list[tuple[str, str, int, str]]
) -> None:
    """Load the programs in node's netns: its containers (container, network) local, the
    remote endpoints (address, mac, network, node address), networks 1 (VNI_A), 2 (VNI_B),
    overlays both: every endpoint keyed in its network's scope."""
    with node.host.enter():
        with NetHost() as net:
            vxlan = net.ensure_vxlan(VXLAN_NAME, VXLAN_OWNER)
        with NatDatapath(root=node.root) as nat, OverlayDatapath(root=node.root) as ov:
            nat.config.host = HostConfig(vxlan_ifindex=vxlan.ifindex)
            nat.networks[1] = NetworkInfo(False, EUI(ROUTER), VNI_A)
            nat.networks[2] = NetworkInfo(False, EUI(ROUTER), VNI_B)
            nat.vnis.update_batch({VNI_A: 1, VNI_B: 2})
            ov.ensure_attached(vxlan.ifindex)
        with Datapath(root=node.root) as dp:
            want = {}
            for c, network in containers:
                dp.ensure_attached(c.host_ifindex)
                key = Scoped(IPAddress(str(c.address.ip)), network)
                want[key] = Endpoint(c.host_ifindex, EUI(str(c.mac)), network)
            for addr, mac, network, at in remote:
                want[Scoped(IPAddress(addr), network)] = Endpoint(
                    0, EUI(mac), network, REMOTE, IPAddress(at)
                )
            dp.sync_endpoints(want)


@pytest.fixture
def two(topology: Topology, bpffs: Path) -> Iterator[tuple[Node, Node]]:
    nodes = []
    for i in (1, 2):
        h = topology.add_host(f"n{i}")
        h.connect_fabric(f"10.98.0.{i}/24", ifname="eth0")
        nodes.append(Node(h, f"10.98.0.{i}", bpffs / f"ov{os.getpid()}-{i}"))
    yield nodes[0], nodes[1]
    for n in nodes:
        remove_root(n.root)


def test_containers_on_two_nodes_reach_each_other_and_vnis_stay_apart(
    two: tuple[Node, Node],
) -> None:
    """Two overlay networks with one subnet, their addresses crossed: a1 (node 1) and a2
    (node 2) on network 1, b2 (node 2) and b1 (node 1) on network 2 with a1's and a2's
    addresses. a1 reaches a2 and b2 reaches b1 through the tunnel (ICMP, TCP), each in its
    own network (b1 holds a2's address on node 1, a1's on node 2 is b2's); the wire shows
    VXLAN with each network's VNI. A packet tunnelled with network 1's VNI to c2, which is
    on network 2 (node 1 told wrongly), finds no endpoint on the receiving node."""
    n1, n2 = two
    a1 = n1.host.add_container("a1", "10.60.0.2/24", gateway="10.60.0.1", mtu=MTU)
    b1 = n1.host.add_container("b1", "10.60.0.3/24", gateway="10.60.0.1", mtu=MTU)
    a2 = n2.host.add_container("a2", "10.60.0.3/24", gateway="10.60.0.1", mtu=MTU)
    b2 = n2.host.add_container("b2", "10.60.0.2/24", gateway="10.60.0.1", mtu=MTU)
    c2 = n2.host.add_container("c2", "10.60.0.4/24", gateway="10.60.0.1", mtu=MTU)
    wire(
        n1,
        [(a1, 1), (b1, 2)],
        [
            ("10.60.0.3", str(a2.mac), 1, n2.underlay),
            ("10.60.0.2", str(b2.mac), 2, n2.underlay),
            ("10.60.0.4", str(c2.mac), 1, n2.underlay),
        ],
    )
    wire(
        n2,
        [(a2, 1), (b2, 2), (c2, 2)],
        [("10.60.0.2", str(a1.mac), 1, n1.underlay), ("10.60.0.3", str(b1.mac), 2, n1.underlay)],
    )
    capture = n2.host.popen(
        ["tshark", "-i", "eth0", "-c", "8", "-f", "udp dst port 4789", "-T", "fields",
         "-e", "vxlan.vni", "-e", "ip.src", "-e", "ip.dst"]
    )  # fmt: skip
    assert wait_for(lambda: "Capture started" in capture.output(), 10), capture.output()
    a1.run(["ping", "-c2", "-W2", "10.60.0.3"])
    b1.run(["ping", "-c2", "-W2", "10.60.0.2"])
    for server, name in ((a2, "a2"), (b1, "b1")):
        server.popen(["socat", "TCP-LISTEN:7000,reuseaddr", f"SYSTEM:echo {name}"]).wait_port(7000)
    assert a1.run(["socat", "-T2", "-", "TCP:10.60.0.3:7000"]).stdout.strip() == "a2"
    assert b2.run(["socat", "-T2", "-", "TCP:10.60.0.3:7000"]).stdout.strip() == "b1"
    assert capture.wait(timeout=10) == 0
    rows = [line.split("\t") for line in capture.output().splitlines() if "\t" in line]
    assert {r[0] for r in rows} == {str(VNI_A), str(VNI_B)}, capture.output()
    assert n1.counters()["REASON_TUNNEL_TX"] >= 4
    assert n2.counters()["REASON_TUNNEL_RX"] >= 4
    r = a1.run(["ping", "-c1", "-W1", "10.60.0.4"], check=False)
    assert r.returncode != 0
    assert n2.counters().get("DROP_TUNNEL_NO_EP", 0) >= 1

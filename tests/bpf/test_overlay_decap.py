"""The overlay's receive fast path through BPF_PROG_TEST_RUN: from_netdev decapsulates a
VXLAN frame from another pydp node to a local endpoint and delivers it; everything it must
not take goes to the stack (the VXLAN device's way) untouched."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netaddr import EUI, IPAddress
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet

from pydp.loader import BpfObject, Program, test_run
from pydp.maps import (
    CONSTANTS,
    ConfigMap,
    Endpoint,
    EndpointMap,
    HostConfig,
    MetricsMap,
    NetworkInfo,
    NetworkMap,
    VniMap,
)
from pydp.maps.endpoint import Scoped
from pydp.net.netns import entered

from .conftest import HOST, NEXT_HOP_MAC, UPLINK_IF, UPLINK_MAC
from .packets import TC_ACT_OK, TC_ACT_REDIRECT, decode, skb_ctx

VNI, NET, VXLAN_IF = 4096, 1, 8  # the network, and the VXLAN device's ifindex (any, not 0)
ROUTER = "02:42:ff:00:10:00"
LOCAL, LOCAL_MAC, EP_IFINDEX = "10.80.0.2", "02:00:00:00:00:02", 42
PEER, PEER_MAC, PEER_NODE = "10.80.0.3", "02:00:00:00:00:03", "192.0.2.50"
BACKEND = "10.80.0.4"  # a service's backend on the peer node
REMOTE = CONSTANTS["ENDPOINT_F_REMOTE"]
LB_BACKEND = CONSTANTS["ENDPOINT_F_LB_BACKEND"]


def tunnelled(inner: Packet, vni: int = VNI, node: str = PEER_NODE, dport: int = 4789) -> bytes:
    """A VXLAN frame from node to this host's uplink carrying inner (from PEER_MAC)."""
    outer = Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC) / IP(src=node, dst=HOST, ttl=64)
    udp = outer / UDP(sport=50123, dport=dport) / VXLAN(vni=vni, flags=0x08)
    return bytes(udp / Ether(src=PEER_MAC, dst=ROUTER) / inner)


def segment(src: str = PEER, dst: str = LOCAL) -> Packet:
    return IP(src=src, dst=dst, ttl=63) / TCP(sport=40000, dport=80, flags="PA") / b"payload"


@dataclass
class Decap:
    prog: Program
    metrics: MetricsMap
    netns: str

    def run(self, frame: bytes) -> tuple[int, bytes]:
        with entered(self.netns):
            r = test_run(self.prog, frame, ctx=skb_ctx(UPLINK_IF))
        return r.verdict, r.packet

    def count(self, reason: str) -> int:
        return self.metrics.counter(reason).packets


@pytest.fixture(scope="module")
def decap(bpffs: Path, routed_netns: str) -> Iterator[Decap]:
    """uplink.bpf.o with the uplink (HOST), one overlay network (VNI), a local endpoint, an
    endpoint and a service backend announced by PEER_NODE."""
    with BpfObject("uplink.bpf.o", pin_root=bpffs / "decap") as up:
        up.load()
        ConfigMap(up.map("pydp_config"))[0] = HostConfig(
            UPLINK_IF, IPAddress(HOST), vxlan_ifindex=VXLAN_IF
        )
        NetworkMap(up.map("pydp_networks"))[NET] = NetworkInfo(True, EUI(ROUTER), VNI)
        VniMap(up.map("pydp_vnis"))[VNI] = NET
        EndpointMap(up.map("pydp_endpoints")).update_batch(
            {
                Scoped(IPAddress(LOCAL), NET): Endpoint(EP_IFINDEX, EUI(LOCAL_MAC), NET),
                Scoped(IPAddress(PEER), NET): Endpoint(
                    0, EUI(PEER_MAC), NET, REMOTE, IPAddress(PEER_NODE)
                ),
                Scoped(IPAddress(BACKEND), NET): Endpoint(
                    0, EUI(PEER_MAC), NET, REMOTE | LB_BACKEND, IPAddress(PEER_NODE)
                ),
            }
        )
        yield Decap(up.program("from_netdev"), MetricsMap(up.map("pydp_metrics")), routed_netns)


def test_a_peer_nodes_frame_is_decapsulated_and_delivered(decap: Decap) -> None:
    """Outer IPv4, UDP, VXLAN and inner Ethernet headers go; the inner packet is delivered
    unchanged into the endpoint (its MAC, from the network's router MAC)."""
    inner = segment()
    before = decap.count("REASON_TUNNEL_DECAP")
    verdict, out = decap.run(tunnelled(inner))
    want = bytes(Ether(src=ROUTER, dst=LOCAL_MAC) / inner)
    assert verdict == TC_ACT_REDIRECT, decode(out)
    assert out == want, f"got\n{decode(out)}\nwant\n{decode(want)}"
    assert decap.count("REASON_TUNNEL_DECAP") == before + 1


@pytest.mark.parametrize(
    ("desc", "frame"),
    [
        ("a source no node announced (a plain vxlan peer)", tunnelled(segment(src="10.80.0.9"))),
        ("a service backend's frame (its reply may need the VIP)", tunnelled(segment(BACKEND))),
        ("the outer source is not the endpoint's node", tunnelled(segment(), node="192.0.2.51")),
        ("a VNI no network here has", tunnelled(segment(), vni=4097)),
        ("to an address that is no local endpoint", tunnelled(segment(dst="10.80.0.77"))),
        ("to an endpoint on another node", tunnelled(segment(dst=PEER))),
        ("ARP through the tunnel", tunnelled(ARP(psrc=PEER, pdst=LOCAL))),
        ("another UDP port", tunnelled(segment(), dport=4790)),
    ],
)
def test_what_the_fast_path_must_not_take_goes_on_untouched(
    decap: Decap, desc: str, frame: bytes
) -> None:
    """Each goes to the stack unchanged (the VXLAN device, from_overlay decide)."""
    before = decap.count("REASON_TUNNEL_DECAP")
    verdict, out = decap.run(frame)
    assert (verdict, out) == (TC_ACT_OK, frame), f"{desc}:\n{decode(out)}"
    assert decap.count("REASON_TUNNEL_DECAP") == before

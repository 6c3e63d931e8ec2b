"""from_container on crafted packets through BPF_PROG_TEST_RUN: a table of cases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from netaddr import EUI, IPAddress
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from pydp.errors import DatapathError
from pydp.loader import BpfObject, test_run
from pydp.maps import Endpoint, EndpointMap, Iface, IfaceMap, MetricsMap

from .packets import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, Case, run_case

SRC_MAC, DST_MAC, EP_MAC = "02:00:00:00:00:01", "02:00:00:00:00:fe", "02:00:00:00:00:02"
EP = {IPAddress("10.0.0.2"): Endpoint(ifindex=42, mac=EUI(EP_MAC), network=1)}
LO = 1  # test_run needs a real device for skb->ifindex: loopback stands for the source veth


def with_source(network: int, ifindex: int = LO) -> dict[IPAddress, Endpoint]:
    """EP plus the sender 10.0.0.1 as a local endpoint on ifindex, in network."""
    src = Endpoint(ifindex=ifindex, mac=EUI(SRC_MAC), network=network)
    return {**EP, IPAddress("10.0.0.1"): src}


def eth(proto: int | None = None) -> Ether:
    return (
        Ether(src=SRC_MAC, dst=DST_MAC)
        if proto is None
        else Ether(src=SRC_MAC, dst=DST_MAC, type=proto)
    )


def ip4(dst: str = "10.0.0.2", **kw: object) -> IP:
    return IP(src="10.0.0.1", dst=dst, **kw)


def to_endpoint(pkt: bytes) -> bytes:
    """What a redirect does: the destination MAC becomes the endpoint's, nothing else."""
    return EUI(EP_MAC).packed + pkt[6:]


def raw(p: object) -> bytes:
    return bytes(p)  # type: ignore[call-overload]


TCP_SYN = raw(eth() / ip4() / TCP(sport=40000, dport=80, flags="S"))
CASES = [
    Case(
        "tcp to a local endpoint is redirected",
        TCP_SYN,
        TC_ACT_REDIRECT,
        "REASON_REDIRECT",
        to_endpoint,
        EP,
    ),
    Case(
        "udp to a local endpoint is redirected",
        raw(eth() / ip4() / UDP(sport=5353, dport=53) / Raw(b"q" * 20)),
        TC_ACT_REDIRECT,
        "REASON_REDIRECT",
        to_endpoint,
        EP,
    ),
    Case(
        "icmp echo to a local endpoint is redirected",
        raw(eth() / ip4() / ICMP(id=7, seq=1) / Raw(b"ping")),
        TC_ACT_REDIRECT,
        "REASON_REDIRECT",
        to_endpoint,
        EP,
    ),
    Case(
        "ip options are honoured: the packet is parsed past them and redirected",
        raw(
            eth()
            / ip4(options=[IPOption_Router_Alert(), IPOption_NOP()] * 2)
            / TCP(dport=80, flags="S")
        ),
        TC_ACT_REDIRECT,
        "REASON_REDIRECT",
        to_endpoint,
        EP,
    ),
    Case(
        "a local source on the destination's network is redirected",
        TCP_SYN,
        TC_ACT_REDIRECT,
        "REASON_REDIRECT",
        to_endpoint,
        with_source(network=1),
        ifindex=LO,
    ),
    Case(
        "a local source on another network is dropped (isolation)",
        TCP_SYN,
        TC_ACT_SHOT,
        "DROP_NET_ISOLATED",
        None,
        with_source(network=2),
        ifindex=LO,
    ),
    Case(
        "a source address of another local endpoint is dropped (spoofed)",
        TCP_SYN,
        TC_ACT_SHOT,
        "DROP_SRC_SPOOFED",
        None,
        with_source(network=1, ifindex=999),
        ifindex=LO,
    ),
    # the source only in pydp_ifaces (not in the endpoint map): only the array path can decide
    Case(
        "the interface's own endpoint, same network, is redirected (pydp_ifaces path)",
        TCP_SYN,
        TC_ACT_REDIRECT,
        "REASON_REDIRECT",
        to_endpoint,
        EP,
        ifindex=LO,
        ifaces={LO: Iface(IPAddress("10.0.0.1"), 1)},
    ),
    Case(
        "the interface's own endpoint, another network, is dropped (pydp_ifaces path)",
        TCP_SYN,
        TC_ACT_SHOT,
        "DROP_NET_ISOLATED",
        None,
        EP,
        ifindex=LO,
        ifaces={LO: Iface(IPAddress("10.0.0.1"), 2)},
    ),
    Case(
        "a destination not in the endpoint map goes to the stack unchanged",
        raw(eth() / ip4(dst="10.0.0.9") / TCP(dport=80)),
        TC_ACT_OK,
        "REASON_PASS",
        None,
        EP,
    ),
    Case("an empty endpoint map passes everything", TCP_SYN, TC_ACT_OK, "REASON_PASS"),
    Case(
        "arp goes to the stack",
        raw(Ether(src=SRC_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2")),
        TC_ACT_OK,
        "REASON_PASS_NON_IP",
        None,
        EP,
    ),
    Case(
        "ipv6 goes to the stack",
        raw(eth() / IPv6(dst="fd00::2") / UDP(dport=53)),
        TC_ACT_OK,
        "REASON_PASS_NON_IP",
        None,
        EP,
    ),
    Case(
        "an unknown ethertype goes to the stack",
        raw(eth(0x88B5) / Raw(b"\x00" * 46)),
        TC_ACT_OK,
        "REASON_PASS_NON_IP",
        None,
        EP,
    ),
    Case(
        "ihl < 5 is dropped",
        raw(eth() / ip4(ihl=4) / TCP()),
        TC_ACT_SHOT,
        "DROP_INVALID_IP",
        None,
        EP,
    ),
    Case(
        "ihl pointing past the packet is dropped",
        raw(eth() / ip4(ihl=15) / Raw(b"x" * 8)),
        TC_ACT_SHOT,
        "DROP_INVALID_IP",
        None,
        EP,
    ),
    Case(
        "version 6 behind the ipv4 ethertype is dropped",
        raw(eth(0x0800) / IPv6(dst="fd00::2")),
        TC_ACT_SHOT,
        "DROP_INVALID_IP",
        None,
        EP,
    ),
    Case(
        "a truncated tcp header is dropped",
        TCP_SYN[: 14 + 20 + 10],
        TC_ACT_SHOT,
        "DROP_INVALID_L4",
        None,
        EP,
    ),
    Case(
        "a truncated udp header is dropped",
        raw(eth() / ip4(proto=17) / Raw(b"\x00" * 4)),
        TC_ACT_SHOT,
        "DROP_INVALID_L4",
        None,
        EP,
    ),
    Case(
        "a non-first fragment carries no l4 header and is still redirected",
        raw(eth() / ip4(proto=6, frag=100) / Raw(b"\x00" * 4)),
        TC_ACT_REDIRECT,
        "REASON_REDIRECT",
        to_endpoint,
        EP,
    ),
]


@pytest.fixture(scope="module")
def endpoint_obj(bpffs: Path) -> Iterator[BpfObject]:
    """Module scope, needs bpffs: endpoint.bpf.o loaded with its maps pinned in the test root."""
    with BpfObject("endpoint.bpf.o") as obj:
        yield obj.load()


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_from_container_table(endpoint_obj: BpfObject, case: Case) -> None:
    """Each row's packet gets its verdict, its exact output bytes and one count of its reason."""
    run_case(
        endpoint_obj.program("from_container"),
        EndpointMap(endpoint_obj.map("pydp_endpoints")),
        MetricsMap(endpoint_obj.map("pydp_metrics")),
        case,
        IfaceMap(endpoint_obj.map("pydp_ifaces")),
    )


@pytest.mark.parametrize(
    "packet",
    [TCP_SYN[:13], raw(eth(0x0800)), TCP_SYN[: 14 + 12]],
    ids=["truncated ethernet", "ethernet only, typed ipv4", "truncated ipv4 header"],
)
def test_from_container_truncated_headers_refused_by_test_run(
    endpoint_obj: BpfObject, packet: bytes
) -> None:
    """Kernel 6.18's test_run refuses TC packets with a truncated Ethernet or IPv4 header, so
    these cases are sent as real frames instead (tests/netns/test_endpoint_redirect.py)."""
    with pytest.raises(DatapathError, match="Invalid argument"):
        test_run(endpoint_obj.program("from_container"), packet)


def test_from_container_redirect_peer_off_uses_bpf_redirect(bpffs: Path) -> None:
    """With CFG_REDIRECT_PEER=0 the program still redirects (bpf_redirect to the host veth)."""
    with BpfObject("endpoint.bpf.o") as obj:
        obj.set_rodata("CFG_REDIRECT_PEER", 0)
        obj.load()
        EndpointMap(obj.map("pydp_endpoints")).update_batch(EP)
        result = test_run(obj.program("from_container"), TCP_SYN)
    assert result.verdict == TC_ACT_REDIRECT
    assert result.packet == to_endpoint(TCP_SYN)

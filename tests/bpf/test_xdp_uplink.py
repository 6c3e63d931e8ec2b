"""xdp_uplink through BPF_PROG_TEST_RUN: the published-port and reverse-SNAT fast path.

In test_run (not live frames) a successful bpf_redirect is the verdict XDP_REDIRECT; the frame
is checked byte for byte as it would leave. XDP shares pydp_nat with the TC programs: a
connection XDP starts is reverse-translated by from_container, and one from_container starts
is reverse-translated by XDP.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from netaddr import IPAddress
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from pydp.loader import BpfObject, Program, test_run
from pydp.maps import HostConfig, NatKey
from pydp.net.netns import entered

from .packets import TC_ACT_OK, TC_ACT_REDIRECT, decode, skb_ctx
from .test_nat import (
    BASE,
    CLIENT,
    CONT,
    CONT_MAC,
    EP_IFINDEX,
    GW_MAC,
    HOST,
    LO,
    NEXT_HOP_MAC,
    PING,
    SYN_OUT,
    TCP_P,
    UDP_P,
    UDP_Q,
    UPLINK_MAC,
    Maps,
    NatCase,
    delivered,
    icmp_error,
    into,
    leaving,
    out_of,
    quote,
    raw,
    routed,
    tcp,
)

XDP_DROP, XDP_PASS, XDP_REDIRECT = 1, 2, 4
XDP_VERDICTS = {XDP_DROP: "XDP_DROP", XDP_PASS: "XDP_PASS", XDP_REDIRECT: "XDP_REDIRECT"}


@dataclass
class Progs:
    maps: Maps
    progs: dict[str, Program]
    netns: str  # where test_run routes: conftest's routed_netns

    def run(self, name: str, packet: bytes) -> tuple[int, bytes]:
        ctx = None if name == "xdp_uplink" else skb_ctx(LO)
        with entered(self.netns):
            r = test_run(self.progs[name], packet, ctx=ctx)
        return r.verdict, r.packet


@pytest.fixture(scope="module")
def xdp_progs(bpffs: Path, routed_netns: str) -> Iterator[Progs]:
    """Module scope, needs bpffs and routed_netns: endpoint, uplink and xdp_uplink objects
    sharing pins."""
    with (
        BpfObject("endpoint.bpf.o") as ep,
        BpfObject("uplink.bpf.o") as up,
        BpfObject("xdp_uplink.bpf.o") as xdp,
    ):
        for obj in (ep, up, xdp):
            obj.load()
        progs = Progs(
            Maps(xdp),
            {
                "from_container": ep.program("from_container"),
                "from_netdev": up.program("from_netdev"),
                "xdp_uplink": xdp.program("xdp_uplink"),
            },
            routed_netns,
        )
        yield progs
        progs.maps.reset()


@pytest.fixture
def xdp(xdp_progs: Progs) -> Iterator[Progs]:
    """Function scope: the programs, maps emptied (no uplink) after the test."""
    yield xdp_progs
    xdp_progs.maps.reset()


@dataclass(frozen=True)
class XdpCase:
    desc: str
    packet: bytes
    verdict: int
    reason: str
    expect: bytes | None = None  # None: unchanged
    before: Sequence[tuple[str, bytes]] = ()
    config: HostConfig | None = None  # None: the NAT table's uplink


def frag(l4: Packet, **kw: int) -> bytes:
    return raw(Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC) / IP(src=CLIENT, dst=HOST, **kw) / l4)


def offloaded(l4: Packet, src: str = CLIENT, dst: str = HOST) -> bytes:
    """A frame sent with checksum offload (CHECKSUM_PARTIAL, as from a local stack through a
    veth): its TCP/UDP checksum field holds only the pseudo-header sum, uncomplemented."""
    a, b = int(IPAddress(src)), int(IPAddress(dst))
    s = (a >> 16) + (a & 0xFFFF) + (b >> 16) + (b & 0xFFFF)
    s += (UDP_P if isinstance(l4, UDP) else TCP_P) + len(l4)
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    l4 = l4.copy()
    l4.chksum = s
    return raw(Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC) / IP(src=src, dst=dst) / l4)


BIG = Raw(bytes(range(256)) * 2 + b"odd-length tail" * 7)  # 2 chunks, words and a last byte

CASES = [
    XdpCase(
        "uplink unset: everything passes",
        into(tcp(50000, 8080), src=CLIENT),
        XDP_PASS,
        "REASON_XDP_PASS",
        config=HostConfig(),
    ),
    XdpCase(
        "dnat tcp syn to a published port",
        into(tcp(50000, 8080), src=CLIENT),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        delivered(tcp(50000, 80), src=CLIENT),
    ),
    XdpCase(
        "dnat udp to a published port",
        into(UDP(sport=50000, dport=5353) / Raw(b"q"), src=CLIENT),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        delivered(UDP(sport=50000, dport=53) / Raw(b"q"), src=CLIENT),
    ),
    XdpCase(
        "dnat udp without checksum keeps 0",
        into(UDP(sport=50000, dport=5353, chksum=0) / Raw(b"q"), src=CLIENT),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        delivered(UDP(sport=50000, dport=53, chksum=0) / Raw(b"q"), src=CLIENT),
    ),
    XdpCase(
        "dnat tcp syn sent with checksum offload: checksum computed in full",
        offloaded(tcp(50000, 8080)),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        delivered(tcp(50000, 80), src=CLIENT),
    ),
    XdpCase(
        "dnat, established, odd-length data sent with checksum offload",
        offloaded(tcp(50000, 8080, "PA") / BIG),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        delivered(tcp(50000, 80, "PA") / BIG, src=CLIENT),
        before=[("from_netdev", into(tcp(50000, 8080), src=CLIENT))],
    ),
    XdpCase(
        "dnat udp sent with checksum offload: checksum computed in full",
        offloaded(UDP(sport=50000, dport=5353) / BIG),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        delivered(UDP(sport=50000, dport=53) / BIG, src=CLIENT),
    ),
    XdpCase(
        "dnat, established (entry from TC's from_netdev)",
        into(tcp(50000, 8080, "A"), src=CLIENT),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        delivered(tcp(50000, 80, "A"), src=CLIENT),
        before=[("from_netdev", into(tcp(50000, 8080), src=CLIENT))],
    ),
    XdpCase(
        "dnat on a port published on one address",
        into(tcp(50000, 9090), src=CLIENT, dst="192.0.2.9"),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        delivered(tcp(50000, 90), src=CLIENT),
    ),
    XdpCase(
        "reverse snat of a tcp reply",
        into(tcp(80, 40000, "SA")),
        XDP_REDIRECT,
        "REASON_XDP_REV_NAT",
        delivered(tcp(80, 40000, "SA")),
        before=[("from_container", SYN_OUT)],
    ),
    XdpCase(
        "reverse snat of a udp reply",
        into(UDP(sport=53, dport=40000) / Raw(b"answer")),
        XDP_REDIRECT,
        "REASON_XDP_REV_NAT",
        delivered(UDP(sport=53, dport=40000) / Raw(b"answer")),
        before=[("from_container", out_of(UDP_Q))],
    ),
    XdpCase(
        "icmp echo reply: left to TC",
        into(ICMP(type=0, id=7, seq=1) / Raw(b"ping")),
        XDP_PASS,
        "REASON_XDP_PASS",
        before=[("from_container", out_of(PING))],
    ),
    XdpCase(
        "icmp error quoting a masqueraded packet: left to TC",
        raw(Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC) / icmp_error(3, 3, quote(UDP_Q))),
        XDP_PASS,
        "REASON_XDP_PASS",
        before=[("from_container", out_of(UDP_Q))],
    ),
    XdpCase(
        "first fragment: left to TC",
        frag(tcp(50000, 8080), flags="MF"),
        XDP_PASS,
        "REASON_XDP_PASS",
    ),
    XdpCase(
        "later fragment: left to TC", frag(Raw(b"x" * 16), frag=2), XDP_PASS, "REASON_XDP_PASS"
    ),
    XdpCase(
        "not ipv4 (arp): passes",
        raw(Ether(src=NEXT_HOP_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP()),
        XDP_PASS,
        "REASON_XDP_PASS",
    ),
    XdpCase(
        "a reply to a nat port with no entry: TC decides (socket lookup)",
        into(tcp(80, 40000, "SA")),
        XDP_PASS,
        "REASON_XDP_PASS",
    ),
    XdpCase("the host's own traffic passes", into(tcp(5555, 22)), XDP_PASS, "REASON_XDP_PASS"),
    XdpCase(
        "ttl 1: left to TC (from_netdev drops it, counted)",
        frag(tcp(50000, 8080), ttl=1),
        XDP_PASS,
        "REASON_XDP_PASS",
    ),
    XdpCase(
        "ttl 2 is delivered with ttl 1",
        frag(tcp(50000, 8080), ttl=2),
        XDP_REDIRECT,
        "REASON_XDP_DNAT",
        routed(
            raw(Ether(src=GW_MAC, dst=CONT_MAC) / IP(src=CLIENT, dst=CONT, ttl=2) / tcp(50000, 80))
        ),
    ),
]


def check(
    xdp: Progs, desc: str, name: str, packet: bytes, verdict: int, reason: str, expect: bytes | None
) -> None:
    before = xdp.maps.metrics.counter(reason)
    got_verdict, got = xdp.run(name, packet)
    names = XDP_VERDICTS if name == "xdp_uplink" else {}
    got_name, want_name = names.get(got_verdict, got_verdict), names.get(verdict, verdict)
    assert got_verdict == verdict, f"{desc}: verdict {got_name}, expected {want_name}"
    want = packet if expect is None else expect
    assert got == want, (
        f"{desc}: output differs\n--- got\n{decode(got)}\n--- expected\n{decode(want)}"
    )
    after = xdp.maps.metrics.counter(reason)
    assert after.packets - before.packets == 1, f"{desc}: {reason} not counted once"
    assert after.bytes - before.bytes == len(packet), f"{desc}: {reason} bytes"


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_xdp_uplink_table(xdp: Progs, case: XdpCase) -> None:
    """Each row gets its XDP verdict, its exact output bytes and one count of its reason."""
    base = BASE if case.config is None else NatCase("", "", b"", 0, "", config=case.config)
    xdp.maps.reset(base)
    for name, pkt in case.before:
        assert xdp.run(name, pkt)[0] in (TC_ACT_OK, TC_ACT_REDIRECT), f"{case.desc}: set-up refused"
    check(xdp, case.desc, "xdp_uplink", case.packet, case.verdict, case.reason, case.expect)


def test_xdp_dnat_entries_serve_tc_reply(xdp: Progs) -> None:
    """A connection XDP opens writes the same two entries as from_netdev: the container's reply
    leaves through from_container translated back to the published port."""
    xdp.maps.reset(BASE)
    assert xdp.run("xdp_uplink", into(tcp(50000, 8080), src=CLIENT))[0] == XDP_REDIRECT
    fwd = xdp.maps.nat[NatKey(IPAddress(CLIENT), IPAddress(HOST), 50000, 8080, TCP_P, True)]
    assert (fwd.address, fwd.port, fwd.ifindex, fwd.state_name) == (
        IPAddress(CONT),
        80,
        EP_IFINDEX,
        "CT_SYN",
    )
    check(
        xdp,
        "reply",
        "from_container",
        out_of(tcp(80, 50000, "SA"), dst=CLIENT),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        leaving(tcp(8080, 50000, "SA"), dst=CLIENT),
    )
    xdp.run("xdp_uplink", into(tcp(50000, 8080, "A"), src=CLIENT))
    rev = xdp.maps.nat[NatKey(IPAddress(CONT), IPAddress(CLIENT), 80, 50000, TCP_P)]
    assert rev.state_name == "CT_ESTABLISHED"

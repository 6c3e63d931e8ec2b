"""NAT through BPF_PROG_TEST_RUN: masquerade, published ports, replies, ICMP errors, conntrack.

The programs run in a namespace of their own (conftest's routed_netns) whose uplink routes
every outside address, so a translated packet leaving a container comes back whole as the
redirect would send it: addresses, ports, checksums, TTL and MACs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from netaddr import EUI, IPAddress, IPNetwork
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from pydp.loader import BpfObject, Program, test_run
from pydp.maps import (
    ConfigMap,
    Endpoint,
    EndpointMap,
    HostConfig,
    Iface,
    IfaceMap,
    MetricsMap,
    NatEntry,
    NatKey,
    NatMap,
    NetworkInfo,
    NetworkMap,
    PortKey,
    PortMap,
    PortTarget,
    SubnetMap,
    monotonic_ns,
)
from pydp.net.netns import entered

from .conftest import HOST, NEXT_HOP_MAC, UPLINK_IF, UPLINK_MAC
from .packets import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, VERDICTS, decode, skb_ctx

LO = 1  # test_run needs real devices: lo stands for the container's veth
TCP_P, UDP_P, ICMP_P = 6, 17, 1
CONT, CONT_MAC, GW_MAC = "10.0.0.2", "02:00:00:00:00:02", "02:00:00:00:00:fe"
REMOTE, CLIENT, ROUTER = "198.51.100.7", "203.0.113.5", "198.51.100.1"
EP_IFINDEX = 42  # the endpoint's host-side veth (bpf_redirect_peer's target)
NS = 1_000_000_000

UPLINK = HostConfig(UPLINK_IF, IPAddress(HOST))
NETWORKS = {1: NetworkInfo(masquerade=True, gateway_mac=EUI(GW_MAC)), 2: NetworkInfo(True)}
SUBNETS = {IPNetwork("10.0.0.0/24"): 1, IPNetwork("10.1.0.0/24"): 2}
PORTS = {
    PortKey(TCP_P, 8080): PortTarget(IPAddress(CONT), 80),
    PortKey(UDP_P, 5353): PortTarget(IPAddress(CONT), 53),
    PortKey(TCP_P, 9090, IPAddress("192.0.2.9")): PortTarget(IPAddress(CONT), 90),
}


def raw(p: Packet) -> bytes:
    return bytes(p)


def out_of(l4: Packet, src: str = CONT, dst: str = REMOTE) -> bytes:
    """A frame leaving the container for its gateway."""
    return raw(Ether(src=CONT_MAC, dst=GW_MAC) / IP(src=src, dst=dst) / l4)


def leaving(l4: Packet, src: str = HOST, dst: str = REMOTE) -> bytes:
    """A translated frame sent out of the uplink to its next hop (a routed hop)."""
    return routed(raw(Ether(src=UPLINK_MAC, dst=NEXT_HOP_MAC) / IP(src=src, dst=dst) / l4))


def into(l4: Packet, src: str = REMOTE, dst: str = HOST) -> bytes:
    """A frame arriving on the uplink."""
    return raw(Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC) / IP(src=src, dst=dst) / l4)


def routed(frame: bytes) -> bytes:
    """frame after one routed hop: TTL one less, the IP checksum computed anew by scapy (the
    program's incremental update must give the same bytes)."""
    pkt = Ether(frame)
    pkt[IP].ttl -= 1
    del pkt[IP].chksum
    return raw(pkt)


def delivered(l4: Packet, src: str = REMOTE, dst: str = CONT) -> bytes:
    """A frame delivered to the container (a routed hop): its MAC, from the gateway's."""
    return routed(raw(Ether(src=GW_MAC, dst=CONT_MAC) / IP(src=src, dst=dst) / l4))


def icmp_error(
    type_: int, code: int, quote: bytes, src: str = REMOTE, dst: str = HOST, **kw: int
) -> Packet:
    return IP(src=src, dst=dst) / ICMP(type=type_, code=code, **kw) / Raw(quote)


@dataclass(frozen=True)
class NatCase:
    """One row: maps, earlier packets that set conntrack up, the packet, what comes out."""

    desc: str
    program: str  # from_container (ifindex LO, the container's veth) or from_netdev
    packet: bytes
    verdict: int
    reason: str
    expect: bytes | None = None  # None: unchanged
    config: HostConfig = UPLINK
    networks: Mapping[int, NetworkInfo] = field(default_factory=lambda: NETWORKS)
    before: Sequence[tuple[str, bytes]] = ()  # (program, packet) run first
    nat: Mapping[NatKey, NatEntry] = field(default_factory=dict)  # entries written first


class Maps:
    """Every map the NAT programs read, as typed views over the session's pins."""

    def __init__(self, obj: BpfObject) -> None:
        self.config = ConfigMap(obj.map("pydp_config"))
        self.networks = NetworkMap(obj.map("pydp_networks"))
        self.subnets = SubnetMap(obj.map("pydp_subnets"))
        self.nat = NatMap(obj.map("pydp_nat"))
        self.ports = PortMap(obj.map("pydp_ports"))
        self.endpoints = EndpointMap(obj.map("pydp_endpoints"))
        self.ifaces = IfaceMap(obj.map("pydp_ifaces"))
        self.metrics = MetricsMap(obj.map("pydp_metrics"))

    def reset(self, case: NatCase | None = None) -> None:
        self.config.host = HostConfig() if case is None else case.config
        for i in range(4):
            self.networks[i] = NetworkMap.EMPTY
        self.subnets.clear()
        self.nat.clear()
        self.ports.clear()
        self.endpoints.clear()
        self.ifaces[LO] = IfaceMap.EMPTY
        if case is None:
            return
        self.networks.update(case.networks)
        self.subnets.update(SUBNETS)
        self.ports.update_batch(PORTS)
        ep = Endpoint(ifindex=EP_IFINDEX, mac=EUI(CONT_MAC), network=1)
        self.endpoints[IPAddress(CONT)] = ep
        self.ifaces[LO] = Iface(IPAddress(CONT), 1)  # the sender behind the veth (lo here)
        self.nat.update(case.nat)


@dataclass
class Programs:
    maps: Maps
    progs: dict[str, Program]
    netns: str  # where test_run routes: conftest's routed_netns

    def run(self, name: str, packet: bytes) -> tuple[int, bytes]:
        with entered(self.netns):
            result = test_run(self.progs[name], packet, ctx=skb_ctx(LO))
        return result.verdict, result.packet


@pytest.fixture(scope="module")
def nat_progs(bpffs: Path, routed_netns: str) -> Iterator[Programs]:
    """Module scope, needs bpffs and routed_netns: endpoint.bpf.o and uplink.bpf.o loaded,
    sharing their pins."""
    with BpfObject("endpoint.bpf.o") as ep, BpfObject("uplink.bpf.o") as up:
        ep.load()
        up.load()
        progs = Programs(
            Maps(up),
            {
                "from_container": ep.program("from_container"),
                "from_netdev": up.program("from_netdev"),
            },
            routed_netns,
        )
        yield progs
        progs.maps.reset()  # leave no uplink behind for other modules' tests


@pytest.fixture
def nat(nat_progs: Programs) -> Iterator[Programs]:
    """Function scope: the NAT programs with maps emptied (no uplink) after the test."""
    yield nat_progs
    nat_progs.maps.reset()


def tcp(sport: int, dport: int, flags: str = "S") -> TCP:
    return TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=0 if flags == "S" else 1)


SYN_OUT = out_of(tcp(40000, 80))
SNAT_SYN = leaving(tcp(40000, 80))
SYNACK_IN = into(tcp(80, 40000, "SA"))
UDP_Q = UDP(sport=40000, dport=53) / Raw(b"query")
PING = ICMP(type=8, id=7, seq=1) / Raw(b"ping")
LATER = 86_400 * NS  # a day: the table is built at collection, maybe minutes before it runs


def taken(port: int, by: str = "10.0.0.9") -> dict[NatKey, NatEntry]:
    """The reply tuple of REMOTE:80 -> HOST:port held by another live connection."""
    key = NatKey(IPAddress(REMOTE), IPAddress(HOST), 80, port, TCP_P, ingress=True)
    return {key: NatEntry(IPAddress(by), 40000, monotonic_ns() + LATER)}


def quote(l4: Packet, src: str = HOST, dst: str = REMOTE, cut: int | None = None) -> bytes:
    q = raw(IP(src=src, dst=dst, ttl=1) / l4)
    return q if cut is None else q[:cut]


CASES = [
    NatCase(
        "uplink unset: a packet to the outside goes to the stack as today",
        "from_container",
        SYN_OUT,
        TC_ACT_OK,
        "REASON_PASS",
        config=HostConfig(),
    ),
    NatCase(
        "uplink unset: from_netdev passes everything",
        "from_netdev",
        SYNACK_IN,
        TC_ACT_OK,
        "REASON_PASS",
        config=HostConfig(),
    ),
    NatCase(
        "snat tcp: the source port is kept when free",
        "from_container",
        SYN_OUT,
        TC_ACT_REDIRECT,
        "REASON_SNAT",
        SNAT_SYN,
    ),
    NatCase(
        "snat tcp: a taken source port moves into the range",
        "from_container",
        SYN_OUT,
        TC_ACT_REDIRECT,
        "REASON_SNAT",
        leaving(tcp(45000, 80)),
        config=HostConfig(UPLINK_IF, IPAddress(HOST), 45000, 45000),
        nat=taken(40000),
    ),
    NatCase(
        "snat: no free port in a tiny range is a counted drop",
        "from_container",
        SYN_OUT,
        TC_ACT_SHOT,
        "DROP_NAT_NO_PORT",
        config=HostConfig(UPLINK_IF, IPAddress(HOST), 45000, 45001),
        nat={**taken(40000), **taken(45000), **taken(45001)},
    ),
    NatCase(
        "snat tcp of a tracked connection: its ack takes the entry",
        "from_container",
        out_of(tcp(40000, 80, "A")),
        TC_ACT_REDIRECT,
        "REASON_SNAT",
        leaving(tcp(40000, 80, "A")),
        before=[("from_container", SYN_OUT)],
    ),
    NatCase(
        "snat udp",
        "from_container",
        out_of(UDP_Q),
        TC_ACT_REDIRECT,
        "REASON_SNAT",
        leaving(UDP_Q),
    ),
    NatCase(
        "snat udp with checksum 0 keeps 0",
        "from_container",
        out_of(UDP(sport=40000, dport=53, chksum=0) / Raw(b"q")),
        TC_ACT_REDIRECT,
        "REASON_SNAT",
        leaving(UDP(sport=40000, dport=53, chksum=0) / Raw(b"q")),
    ),
    NatCase(
        "snat icmp echo keeps its identifier",
        "from_container",
        out_of(PING),
        TC_ACT_REDIRECT,
        "REASON_SNAT",
        leaving(PING),
    ),
    NatCase(
        "no route through the uplink: to the stack untranslated, no entry written",
        "from_container",
        SYN_OUT,
        TC_ACT_OK,
        "REASON_NAT_FIB_MISS",
        config=HostConfig(LO, IPAddress(HOST)),
    ),
    NatCase(
        "ttl 1: to the stack untranslated (it answers time exceeded), no entry written",
        "from_container",
        raw(Ether(src=CONT_MAC, dst=GW_MAC) / IP(src=CONT, dst=REMOTE, ttl=1) / tcp(40000, 80)),
        TC_ACT_OK,
        "REASON_TTL_TO_STACK",
    ),
    NatCase(
        "masquerade disabled on the network: untouched",
        "from_container",
        SYN_OUT,
        TC_ACT_OK,
        "REASON_PASS",
        networks={1: NetworkInfo(False, EUI(GW_MAC))},
    ),
    NatCase(
        "a destination inside a pydp subnet is not masqueraded",
        "from_container",
        out_of(tcp(40000, 80), dst="10.1.0.5"),
        TC_ACT_OK,
        "REASON_PASS",
    ),
    NatCase(
        "reverse snat: the reply is translated back and delivered",
        "from_netdev",
        SYNACK_IN,
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        delivered(tcp(80, 40000, "SA")),
        before=[("from_container", SYN_OUT)],
    ),
    NatCase(
        "reverse snat of a udp reply",
        "from_netdev",
        into(UDP(sport=53, dport=40000) / Raw(b"answer")),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        delivered(UDP(sport=53, dport=40000) / Raw(b"answer")),
        before=[("from_container", out_of(UDP_Q))],
    ),
    NatCase(
        "reverse snat of an echo reply",
        "from_netdev",
        into(ICMP(type=0, id=7, seq=1) / Raw(b"ping")),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        delivered(ICMP(type=0, id=7, seq=1) / Raw(b"ping")),
        before=[("from_container", out_of(PING))],
    ),
    NatCase(
        "reverse snat to a moved port",
        "from_netdev",
        into(tcp(80, 45000, "SA")),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        delivered(tcp(80, 40000, "SA")),
        config=HostConfig(UPLINK_IF, IPAddress(HOST), 45000, 45000),
        nat=taken(40000),
        before=[("from_container", SYN_OUT)],
    ),
    NatCase(
        "reverse snat of an ack after the syn",
        "from_netdev",
        into(tcp(80, 40000, "A")),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        delivered(tcp(80, 40000, "A")),
        before=[("from_container", SYN_OUT)],
    ),
    NatCase(
        "a reply to a nat port with no entry is dropped",
        "from_netdev",
        SYNACK_IN,
        TC_ACT_SHOT,
        "DROP_NO_CT",
    ),
    NatCase(
        "the host's own traffic (port 22) is untouched",
        "from_netdev",
        into(tcp(5555, 22)),
        TC_ACT_OK,
        "REASON_PASS",
    ),
    NatCase(
        "the host's own traffic below the nat range is untouched",
        "from_netdev",
        into(UDP(sport=53, dport=1053) / Raw(b"x")),
        TC_ACT_OK,
        "REASON_PASS",
    ),
    NatCase(
        "dnat tcp to a published port",
        "from_netdev",
        into(tcp(50000, 8080), src=CLIENT),
        TC_ACT_REDIRECT,
        "REASON_DNAT",
        delivered(tcp(50000, 80), src=CLIENT),
    ),
    NatCase(
        "dnat tcp of a tracked connection: its ack takes the entry",
        "from_netdev",
        into(tcp(50000, 8080, "A"), src=CLIENT),
        TC_ACT_REDIRECT,
        "REASON_DNAT",
        delivered(tcp(50000, 80, "A"), src=CLIENT),
        before=[("from_netdev", into(tcp(50000, 8080), src=CLIENT))],
    ),
    NatCase(
        "dnat udp to a published port",
        "from_netdev",
        into(UDP(sport=50000, dport=5353) / Raw(b"q"), src=CLIENT),
        TC_ACT_REDIRECT,
        "REASON_DNAT",
        delivered(UDP(sport=50000, dport=53) / Raw(b"q"), src=CLIENT),
    ),
    NatCase(
        "dnat on a port published on one address",
        "from_netdev",
        into(tcp(50000, 9090), src=CLIENT, dst="192.0.2.9"),
        TC_ACT_REDIRECT,
        "REASON_DNAT",
        delivered(tcp(50000, 90), src=CLIENT),
    ),
    NatCase(
        "a port published on another address is not matched",
        "from_netdev",
        into(tcp(50000, 9090), src=CLIENT),
        TC_ACT_OK,
        "REASON_PASS",
    ),
    NatCase(
        "reverse dnat: the container's reply leaves from the published port",
        "from_container",
        out_of(tcp(80, 50000, "SA"), dst=CLIENT),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        leaving(tcp(8080, 50000, "SA"), dst=CLIENT),
        before=[("from_netdev", into(tcp(50000, 8080), src=CLIENT))],
    ),
    NatCase(
        "reverse dnat of the container's ack",
        "from_container",
        out_of(tcp(80, 50000, "A"), dst=CLIENT),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        leaving(tcp(8080, 50000, "A"), dst=CLIENT),
        before=[("from_netdev", into(tcp(50000, 8080), src=CLIENT))],
    ),
    NatCase(
        "reverse dnat of udp",
        "from_container",
        out_of(UDP(sport=53, dport=50000) / Raw(b"a"), dst=CLIENT),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        leaving(UDP(sport=5353, dport=50000) / Raw(b"a"), dst=CLIENT),
        before=[("from_netdev", into(UDP(sport=50000, dport=5353) / Raw(b"q"), src=CLIENT))],
    ),
    NatCase(
        "icmp port unreachable quoting a masqueraded udp packet",
        "from_netdev",
        raw(Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC) / icmp_error(3, 3, quote(UDP_Q))),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT_ICMP",
        routed(
            raw(
                Ether(src=GW_MAC, dst=CONT_MAC) / icmp_error(3, 3, quote(UDP_Q, src=CONT), dst=CONT)
            )
        ),
        before=[("from_container", out_of(UDP_Q))],
    ),
    NatCase(
        "fragmentation needed quoting a masqueraded tcp packet (full header)",
        "from_netdev",
        raw(
            Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC)
            / icmp_error(3, 4, quote(tcp(45000, 80)), src=ROUTER, nexthopmtu=1400)
        ),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT_ICMP",
        routed(
            raw(
                Ether(src=GW_MAC, dst=CONT_MAC)
                / icmp_error(
                    3, 4, quote(tcp(40000, 80), src=CONT), src=ROUTER, dst=CONT, nexthopmtu=1400
                )
            )
        ),
        config=HostConfig(UPLINK_IF, IPAddress(HOST), 45000, 45000),
        nat=taken(40000),
        before=[("from_container", SYN_OUT)],
    ),
    NatCase(
        "time exceeded quoting 8 bytes of a masqueraded tcp packet",
        "from_netdev",
        raw(
            Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC)
            / icmp_error(11, 0, quote(tcp(40000, 80), cut=28), src=ROUTER)
        ),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT_ICMP",
        routed(
            raw(
                Ether(src=GW_MAC, dst=CONT_MAC)
                / icmp_error(11, 0, quote(tcp(40000, 80), src=CONT, cut=28), src=ROUTER, dst=CONT)
            )
        ),
        before=[("from_container", SYN_OUT)],
    ),
    NatCase(
        "time exceeded quoting a masqueraded echo request",
        "from_netdev",
        raw(Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC) / icmp_error(11, 0, quote(PING), src=ROUTER)),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT_ICMP",
        routed(
            raw(
                Ether(src=GW_MAC, dst=CONT_MAC)
                / icmp_error(11, 0, quote(PING, src=CONT), src=ROUTER, dst=CONT)
            )
        ),
        before=[("from_container", out_of(PING))],
    ),
    NatCase(
        "an icmp error about the host's own traffic is untouched",
        "from_netdev",
        raw(Ether(src=NEXT_HOP_MAC, dst=UPLINK_MAC) / icmp_error(3, 3, quote(UDP_Q))),
        TC_ACT_OK,
        "REASON_PASS",
    ),
]


BASE = NatCase("maps only", "", b"", 0, "")  # the table's maps, no packet


def check(
    nat: Programs,
    desc: str,
    name: str,
    packet: bytes,
    verdict: int,
    reason: str,
    expect: bytes | None,
) -> None:
    """Run one packet; check its verdict, its exact output and one count of its reason."""
    before = nat.maps.metrics.counter(reason)
    got_verdict, got = nat.run(name, packet)
    assert got_verdict == verdict, (
        f"{desc}: verdict {VERDICTS.get(got_verdict, got_verdict)}, "
        f"expected {VERDICTS.get(verdict, verdict)}"
    )
    want = packet if expect is None else expect
    assert got == want, (
        f"{desc}: output differs\n--- got\n{decode(got)}\n--- expected\n{decode(want)}"
    )
    after = nat.maps.metrics.counter(reason)
    assert after.packets - before.packets == 1, f"{desc}: {reason} not counted once"


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_nat_table(nat: Programs, case: NatCase) -> None:
    """Each row's packet gets its verdict, its exact output bytes (checksums included) and one
    count of its reason; one that leaves untouched writes no conntrack entry."""
    nat.maps.reset(case)
    for name, pkt in case.before:
        verdict, _ = nat.run(name, pkt)
        assert verdict in (TC_ACT_OK, TC_ACT_REDIRECT), f"{case.desc}: set-up packet refused"
    table = dict(nat.maps.nat.items())
    check(nat, case.desc, case.program, case.packet, case.verdict, case.reason, case.expect)
    if case.expect is None:
        assert dict(nat.maps.nat.items()) == table, f"{case.desc}: conntrack changed"


def entries(nat: Programs) -> tuple[NatEntry, NatEntry]:
    """The egress and ingress entries of the SYN_OUT connection."""
    out = NatKey(IPAddress(CONT), IPAddress(REMOTE), 40000, 80, TCP_P)
    back = NatKey(IPAddress(REMOTE), IPAddress(HOST), 80, 40000, TCP_P, ingress=True)
    return nat.maps.nat[out], nat.maps.nat[back]


def test_nat_snat_entries_shape(nat: Programs) -> None:
    """Masquerade writes one entry per direction: translated source out, original back in."""
    nat.maps.reset(BASE)
    nat.run("from_container", SYN_OUT)
    out, back = entries(nat)
    assert (out.address, out.port, out.state_name) == (IPAddress(HOST), 40000, "CT_SYN")
    assert (back.address, back.port, back.ifindex) == (IPAddress(CONT), 40000, LO)
    assert (back.dmac, back.smac) == (EUI(CONT_MAC), EUI(GW_MAC))
    assert 0 < out.expires - monotonic_ns() <= 60 * NS


def test_nat_tcp_lifecycle(nat: Programs) -> None:
    """SYN, SYN-ACK, ACK establish both entries; FIN then RST close them (10 s); once expired,
    a reply is DROP_NO_CT and a new SYN from the container maps the connection again."""
    nat.maps.reset(BASE)
    assert nat.run("from_container", SYN_OUT)[0] == TC_ACT_REDIRECT
    assert nat.run("from_netdev", SYNACK_IN)[0] == TC_ACT_REDIRECT
    assert {e.state_name for e in entries(nat)} == {"CT_SYN"}
    nat.run("from_container", out_of(tcp(40000, 80, "A")))
    out, back = entries(nat)
    assert out.state_name == back.state_name == "CT_ESTABLISHED"
    assert 7400 * NS < out.expires - monotonic_ns() <= 7440 * NS
    nat.run("from_container", out_of(tcp(40000, 80, "FA")))
    assert {e.state_name for e in entries(nat)} == {"CT_CLOSING"}
    check(
        nat,
        "rst in",
        "from_netdev",
        into(tcp(80, 40000, "R")),
        TC_ACT_REDIRECT,
        "REASON_REV_NAT",
        delivered(tcp(80, 40000, "R")),
    )
    out, back = entries(nat)
    assert out.state_name == back.state_name == "CT_CLOSED"
    assert 0 < back.expires - monotonic_ns() <= 10 * NS
    past = monotonic_ns() - 1
    for key, entry in nat.maps.nat.items():
        nat.maps.nat[key] = NatEntry(
            entry.address,
            entry.port,
            past,
            entry.state,
            entry.flags,
            entry.ifindex,
            entry.dmac,
            entry.smac,
        )
    check(
        nat, "late reply", "from_netdev", into(tcp(80, 40000, "A")), TC_ACT_SHOT, "DROP_NO_CT", None
    )
    check(nat, "new syn", "from_container", SYN_OUT, TC_ACT_REDIRECT, "REASON_SNAT", SNAT_SYN)
    assert entries(nat)[0].state_name == "CT_SYN"


def test_nat_dnat_entries_shape(nat: Programs) -> None:
    """A published port's connection gets an ingress entry to the container and an egress
    entry back to the published address and port."""
    nat.maps.reset(BASE)
    nat.run("from_netdev", into(tcp(50000, 8080), src=CLIENT))
    fwd = nat.maps.nat[NatKey(IPAddress(CLIENT), IPAddress(HOST), 50000, 8080, TCP_P, True)]
    rev = nat.maps.nat[NatKey(IPAddress(CONT), IPAddress(CLIENT), 80, 50000, TCP_P)]
    assert (fwd.address, fwd.port, fwd.ifindex) == (IPAddress(CONT), 80, EP_IFINDEX)
    assert (rev.address, rev.port) == (IPAddress(HOST), 8080)


NEW_STRUCTS = (
    "host_config",
    "network_info",
    "subnet_key",
    "subnet_info",
    "nat_key",
    "nat_entry",
    "port_key",
    "port_target",
)


@pytest.mark.parametrize("struct", NEW_STRUCTS)
def test_nat_contract_structs_in_uplink_btf(struct: str) -> None:
    """The NAT contract structs are in the contract (so tests/layout checks them against BTF)
    and in uplink.bpf.o's BTF with cffi's size."""
    from pydp.loader import Btf, object_dir
    from pydp.maps import ffi, struct_names

    assert struct in struct_names()
    with Btf.from_file(object_dir() / "uplink.bpf.o") as btf:
        size, _ = btf.struct(struct)
    assert size == ffi.sizeof(f"struct {struct}")

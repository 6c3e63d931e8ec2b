"""The service path through BPF_PROG_TEST_RUN: a client to a VIP, the backend's reply, an
empty service's reset and port unreachable, the VIP's ARP answer, isolation, and conntrack
keeping a connection's backend while the table changes.

The client sits behind lo (ifindex 1), the backend behind nh0 (ifindex 8) of the packet
tables' namespace (conftest's routed_netns): test_run needs real devices.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from netaddr import EUI, IPAddress, IPNetwork
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from pydp.datapath_lb import LbDatapath, ServiceSpec
from pydp.loader import Map, test_run
from pydp.maps import CONSTANTS, Endpoint, Iface, NetworkInfo, SubnetInfo
from pydp.maps.lb import (
    SVC_F_MAGLEV,
    SVC_F_RANDOM,
    LbBackend,
    LbTables,
    ServiceMap,
    SvcInfo,
    SvcKey,
    pack_table,
)
from pydp.maps.nat import NatEntry, NatKey
from pydp.net.netns import entered

from .packets import TC_ACT_REDIRECT, TC_ACT_SHOT, VERDICTS, decode, skb_ctx
from .test_nat import Programs, nat_progs  # noqa: F401  (the module-scoped fixture)

LO, BE_IF = 1, 8
CLI, CLI_MAC = "10.0.0.5", "02:00:00:00:00:05"
BE1, BE1_MAC, BE2, BE2_MAC = "10.0.0.7", "02:00:00:00:00:07", "10.0.0.8", "02:00:00:00:00:08"
GW_MAC, VIP, NET = "02:00:00:00:00:fe", "10.0.0.100", 1
OTHER = "10.1.0.5"  # a client on network 2
SVC = SvcKey(IPAddress(VIP), 80, 6)
USVC = SvcKey(IPAddress(VIP), 53, 17)
INDEX = 3
M = 251


class Lb:
    """The NAT programs plus the service maps."""

    def __init__(self, progs: Programs) -> None:
        self.progs = progs
        obj_maps = progs.maps
        self.services = ServiceMap(Map.open_pinned("pydp_services"))
        self.tables = LbTables(Map.open_pinned("pydp_lb_tables"), Map.create, Map.by_id)
        self.maps = obj_maps

    def run(self, packet: bytes, ifindex: int = LO) -> tuple[int, bytes]:
        with entered(self.progs.netns):
            r = test_run(self.progs.progs["from_container"], packet, ctx=skb_ctx(ifindex))
        return r.verdict, r.packet

    def table(self, *backends: LbBackend, flags: int = SVC_F_MAGLEV) -> None:
        """Install a table of M slots spread over backends (or none) for the service."""
        if backends:
            slots = [i % len(backends) for i in range(M)]
            table = pack_table(backends, slots)
            self.tables.install(INDEX, table)
            info = SvcInfo(INDEX, M, NET, 1, flags)
        else:
            self.tables.remove(INDEX)
            info = SvcInfo(INDEX, 0, NET, 0, flags)
        self.services[SVC] = info
        self.services[USVC] = info
        self.services[SvcKey(IPAddress(VIP))] = SvcInfo(INDEX, 0, NET)

    def check(self, desc: str, packet: bytes, verdict: int, reason: str, want: bytes | None,
              ifindex: int = LO) -> None:  # fmt: skip
        before = self.maps.metrics.counter(reason).packets
        got_verdict, got = self.run(packet, ifindex)
        assert got_verdict == verdict, f"{desc}: verdict {VERDICTS.get(got_verdict)}"
        if want is not None:
            assert got == want, f"{desc}:\n--- got\n{decode(got)}\n--- expected\n{decode(want)}"
        assert self.maps.metrics.counter(reason).packets == before + 1, f"{desc}: {reason}"


@pytest.fixture
def lb(nat_progs: Programs) -> Iterator[Lb]:  # noqa: F811
    """The NAT programs with a client (lo, network 1), two backends (nh0 for the first),
    a client on network 2, the service VIP:80/tcp and :53/udp; maps emptied after."""
    m = nat_progs.maps
    m.reset()
    m.networks[NET] = NetworkInfo(masquerade=True, gateway_mac=EUI(GW_MAC))
    m.networks[2] = NetworkInfo(masquerade=True, gateway_mac=EUI(GW_MAC))
    m.subnets[IPNetwork("10.0.0.0/24")] = SubnetInfo(NET, IPAddress("10.0.0.1"))
    m.endpoints[IPAddress(CLI)] = Endpoint(ifindex=LO, mac=EUI(CLI_MAC), network=NET)
    m.endpoints[IPAddress(BE1)] = Endpoint(ifindex=BE_IF, mac=EUI(BE1_MAC), network=NET, flags=1)
    m.endpoints[IPAddress(BE2)] = Endpoint(ifindex=42, mac=EUI(BE2_MAC), network=NET, flags=1)
    m.ifaces[LO] = Iface(IPAddress(CLI), NET)
    m.ifaces[BE_IF] = Iface(IPAddress(BE1), NET, flags=1)
    lb = Lb(nat_progs)
    yield lb
    lb.services.clear()
    lb.tables.remove(INDEX)
    m.reset()
    m.ifaces[BE_IF] = Iface(None, 0)


def tcp(sport: int, dport: int, flags: str = "S") -> TCP:
    return TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=0 if flags == "S" else 1)


def frame(l4: Packet, src: str, dst: str, smac: str, dmac: str, ttl: int = 64) -> bytes:
    return bytes(Ether(src=smac, dst=dmac) / IP(src=src, dst=dst, ttl=ttl) / l4)


TO_VIP = frame(tcp(40000, 80), CLI, VIP, CLI_MAC, GW_MAC)
TO_BE1 = frame(tcp(40000, 8080), CLI, BE1, GW_MAC, BE1_MAC)  # no routed hop: TTL kept
REPLY = frame(tcp(8080, 40000, "SA"), BE1, CLI, BE1_MAC, CLI_MAC)
TO_CLI = frame(tcp(80, 40000, "SA"), VIP, CLI, GW_MAC, CLI_MAC)


def test_client_to_vip_reaches_the_backend(lb: Lb) -> None:
    """A SYN to VIP:80 leaves for the backend's port 8080, MACs set, TTL kept."""
    lb.table(LbBackend(IPAddress(BE1), 8080))
    lb.check("syn", TO_VIP, TC_ACT_REDIRECT, "REASON_LB", TO_BE1)


def test_backend_port_0_is_the_frontend_port(lb: Lb) -> None:
    """A backend given without a port serves each frontend on its own port."""
    lb.table(LbBackend(IPAddress(BE1)), flags=SVC_F_RANDOM)
    want = frame(tcp(40000, 80), CLI, BE1, GW_MAC, BE1_MAC)
    lb.check("syn", TO_VIP, TC_ACT_REDIRECT, "REASON_LB", want)


def test_backend_reply_comes_from_the_vip(lb: Lb) -> None:
    """The backend's SYN-ACK to the client leaves with the VIP:80 as its source."""
    lb.table(LbBackend(IPAddress(BE1), 8080))
    lb.run(TO_VIP)
    lb.check("syn-ack", REPLY, TC_ACT_REDIRECT, "REASON_LB_REPLY", TO_CLI, ifindex=BE_IF)


def test_connection_keeps_its_backend_when_the_table_changes(lb: Lb) -> None:
    """Conntrack holds the backend: after the table moves to BE2, the ACK still goes to BE1,
    while a new connection goes to BE2."""
    lb.table(LbBackend(IPAddress(BE1), 8080))
    lb.run(TO_VIP)
    lb.table(LbBackend(IPAddress(BE2), 8080))
    ack = frame(tcp(40000, 80, "A"), CLI, VIP, CLI_MAC, GW_MAC)
    lb.check("ack", ack, TC_ACT_REDIRECT, "REASON_LB",
             frame(tcp(40000, 8080, "A"), CLI, BE1, GW_MAC, BE1_MAC))  # fmt: skip
    lb.check("new syn", frame(tcp(40001, 80), CLI, VIP, CLI_MAC, GW_MAC), TC_ACT_REDIRECT,
             "REASON_LB", frame(tcp(40001, 8080), CLI, BE2, GW_MAC, BE2_MAC))  # fmt: skip


def test_empty_service_resets_tcp(lb: Lb) -> None:
    """No backend: the SYN is answered with a RST|ACK from VIP:80, sent back to the client."""
    lb.table()
    rst = bytes(
        Ether(src=GW_MAC, dst=CLI_MAC)
        / IP(src=VIP, dst=CLI, id=0, flags="DF", ttl=64)
        / TCP(sport=80, dport=40000, seq=0, ack=1001, flags="RA", window=0)
    )
    lb.check("syn", TO_VIP, TC_ACT_REDIRECT, "DROP_LB_NO_BACKEND", rst)


def test_empty_service_answers_udp_port_unreachable(lb: Lb) -> None:
    """No backend: a UDP datagram is answered with an ICMP port unreachable from the VIP."""
    lb.table()
    q = frame(UDP(sport=40000, dport=53) / Raw(b"query"), CLI, VIP, CLI_MAC, GW_MAC)
    ip = bytes(Ether(q)[IP])
    want = bytes(
        Ether(src=GW_MAC, dst=CLI_MAC)
        / IP(src=VIP, dst=CLI, id=0, tos=0xC0, ttl=64)
        / ICMP(type=3, code=3)
        / Raw(ip[:28])
    )
    lb.check("udp", q, TC_ACT_REDIRECT, "DROP_LB_NO_BACKEND", want)


def test_vip_arp_is_answered_with_the_gateway_mac(lb: Lb) -> None:
    """A client's ARP request for the VIP gets a reply from the network's gateway MAC."""
    lb.table(LbBackend(IPAddress(BE1), 8080))
    req = bytes(
        Ether(src=CLI_MAC, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=CLI_MAC, psrc=CLI, hwdst="00:00:00:00:00:00", pdst=VIP)
    )
    want = bytes(
        Ether(src=GW_MAC, dst=CLI_MAC) / ARP(op=2, hwsrc=GW_MAC, psrc=VIP, hwdst=CLI_MAC, pdst=CLI)
    )
    lb.check("arp", req, TC_ACT_REDIRECT, "REASON_ARP_VIP", want)


def test_client_of_another_network_is_isolated(lb: Lb) -> None:
    """A client on network 2 does not reach network 1's VIP."""
    lb.table(LbBackend(IPAddress(BE1), 8080))
    lb.maps.ifaces[LO] = Iface(IPAddress(OTHER), 2)
    pkt = frame(tcp(40000, 80), OTHER, VIP, CLI_MAC, GW_MAC)
    lb.check("syn", pkt, TC_ACT_SHOT, "DROP_NET_ISOLATED", None)


def spec(*backends: tuple[str, int], weights: tuple[int, ...] | None = None,
         draining: frozenset[tuple[IPAddress, int]] = frozenset()) -> ServiceSpec:  # fmt: skip
    bs = tuple(LbBackend(IPAddress(a), p) for a, p in backends)
    return ServiceSpec(
        index=INDEX,
        vip=IPAddress(VIP),
        network=NET,
        frontends=((80, 6),),
        backends=bs,
        identities=tuple(f"{a}:{p}" for a, p in backends),
        weights=weights or (1,) * len(bs),
        lb="maglev",
        size=M,
        draining=draining,
    )


@pytest.fixture
def lbdp(lb: Lb) -> LbDatapath:
    return LbDatapath(
        Map.open_pinned("pydp_services"), Map.open_pinned("pydp_lb_tables"), lb.maps.nat
    )


def test_sync_rebuilds_a_table_only_when_its_service_changes(lb: Lb, lbdp: LbDatapath) -> None:
    """The first sync installs the table; the same specs again install nothing; a changed
    backend set installs one; the frontends and the VIP mark are written."""
    assert lbdp.sync([spec((BE1, 8080), (BE2, 8080))]) == 1
    assert lbdp.sync([spec((BE1, 8080), (BE2, 8080))]) == 0
    assert lbdp.backends(INDEX) == {
        LbBackend(IPAddress(BE1), 8080),
        LbBackend(IPAddress(BE2), 8080),
    }
    assert lbdp.sync([spec((BE1, 8080))]) == 1
    assert lbdp.backends(INDEX) == {LbBackend(IPAddress(BE1), 8080)}
    assert set(lbdp.services.keys()) == {SVC, SvcKey(IPAddress(VIP))}
    assert lbdp.services[SVC].size == M


def test_sync_purges_a_removed_backends_connections_not_a_drained_ones(
    lb: Lb, lbdp: LbDatapath
) -> None:
    """A connection through BE1 loses both conntrack entries when BE1 leaves the service,
    and keeps them when BE1 leaves draining; a removed service drops its table."""
    lbdp.sync([spec((BE1, 8080))])
    lb.run(TO_VIP)
    assert len(lb.maps.nat) == 2
    gone = (IPAddress(BE1), 8080)
    lbdp.sync([spec((BE2, 8080), draining=frozenset({gone}))])
    assert len(lb.maps.nat) == 2
    lbdp.sync([spec((BE2, 8080))])  # no longer draining: BE1 removed for good
    lbdp.sync([spec((BE1, 8080))])
    lb.run(frame(tcp(40001, 80), CLI, VIP, CLI_MAC, GW_MAC))
    assert len(lb.maps.nat) == 2
    lbdp.sync([spec((BE2, 8080))])
    assert len(lb.maps.nat) == 0
    lbdp.sync([])
    assert len(lbdp.services) == 0
    assert lbdp.backends(INDEX) == set()


def test_purge_spares_another_overlays_backend_with_the_same_address(
    lb: Lb, lbdp: LbDatapath
) -> None:
    """BE1 leaving the service purges the connections keyed in its own scope (0: the
    service's network is a bridge) and the uplink's entry leading to it; the entries of a
    container of an overlay network (scope 7) sharing the subnet, keyed with the same
    backend address and port, stay."""
    svc, dnat, snat = (CONSTANTS[f"NAT_F_{f}"] for f in ("SVC", "DNAT", "SNAT"))
    lbdp.sync([spec((BE1, 8080))])
    lb.run(TO_VIP)  # the client's entry and BE1's reply entry, scope 0
    alive = time.monotonic_ns() + 60 * 10**9
    other_client = NatKey(IPAddress(CLI), IPAddress(VIP), 40000, 80, 6, scope=7)
    other_reply = NatKey(IPAddress(BE1), IPAddress(CLI), 8080, 40000, 6, scope=7)
    from_uplink = NatKey(IPAddress("192.0.2.9"), IPAddress("192.0.2.1"), 5555, 80, 6, True)
    lb.maps.nat[other_client] = NatEntry(IPAddress(BE1), 8080, alive, flags=svc | dnat)
    lb.maps.nat[other_reply] = NatEntry(IPAddress(VIP), 80, alive, flags=svc | snat)
    lb.maps.nat[from_uplink] = NatEntry(IPAddress(BE1), 8080, alive, flags=dnat)
    assert len(lb.maps.nat) == 5
    lbdp.sync([spec((BE2, 8080))])
    assert set(lb.maps.nat.keys()) == {other_client, other_reply}


def test_a_syn_on_a_closed_connections_tuple_picks_a_backend_again(lb: Lb) -> None:
    """After a RST closed the connection, a new SYN from the same client port is a new
    connection: it takes the table as it is now (BE2), not the old entry's BE1."""
    lb.table(LbBackend(IPAddress(BE1), 8080))
    lb.run(TO_VIP)
    lb.run(frame(tcp(40000, 80, "R"), CLI, VIP, CLI_MAC, GW_MAC))
    lb.table(LbBackend(IPAddress(BE2), 8080))
    lb.check("syn again", TO_VIP, TC_ACT_REDIRECT, "REASON_LB",
             frame(tcp(40000, 8080), CLI, BE2, GW_MAC, BE2_MAC))  # fmt: skip

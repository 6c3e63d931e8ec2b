"""Hairpin through BPF_PROG_TEST_RUN: a container to a published port of its own host.

from_container DNATs HOST:8080 to the backend CONT:80 and SNATs the client to the gateway of
the backend's network (from pydp_subnets), delivering straight to the backend; the backend's
reply to the gateway comes back through from_container, is translated back and delivered to
the client. Both directions are routed hops (TTL - 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netaddr import EUI, IPAddress, IPNetwork
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from pydp.maps import Endpoint, HostConfig, Iface, NatEntry, NatKey, SubnetInfo, monotonic_ns

from .packets import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT
from .test_nat import (
    BASE,
    CONT,
    CONT_MAC,
    EP_IFINDEX,
    GW_MAC,
    HOST,
    LATER,
    LO,
    TCP_P,
    Programs,
    check,
    nat_progs,  # noqa: F401  (the module-scoped fixture, used by hp)
    raw,
    routed,
    tcp,
)

CLI, CLI_MAC, GW = "10.0.0.5", "02:00:00:00:00:05", "10.0.0.1"  # client on lo, its gateway


def sent(l4: Packet, src: str = CLI, dst: str = HOST, mac: str = CLI_MAC, ttl: int = 64) -> bytes:
    """A frame a container sends to its gateway."""
    return raw(Ether(src=mac, dst=GW_MAC) / IP(src=src, dst=dst, ttl=ttl) / l4)


def got(l4: Packet, src: str, dst: str, mac: str) -> bytes:
    """A frame delivered to a container (mac), one routed hop later."""
    return routed(raw(Ether(src=GW_MAC, dst=mac) / IP(src=src, dst=dst) / l4))


TO_BACKEND = got(tcp(40000, 80), GW, CONT, CONT_MAC)
REPLY = sent(tcp(80, 40000, "SA"), src=CONT, dst=GW, mac=CONT_MAC)
TO_CLIENT = got(tcp(8080, 40000, "SA"), HOST, CLI, CLI_MAC)


@pytest.fixture
def hp(nat_progs: Programs) -> Iterator[Programs]:  # noqa: F811
    """The NAT programs with the NAT table's maps, a client endpoint behind lo and the
    network's gateway address in pydp_subnets."""
    nat_progs.maps.reset(BASE)
    nat_progs.maps.endpoints[IPAddress(CLI)] = Endpoint(ifindex=LO, mac=EUI(CLI_MAC), network=1)
    nat_progs.maps.ifaces[LO] = Iface(IPAddress(CLI), 1)
    nat_progs.maps.subnets[IPNetwork("10.0.0.0/24")] = SubnetInfo(1, IPAddress(GW))
    yield nat_progs
    nat_progs.maps.reset()


def test_hairpin_syn_to_backend_from_gateway(hp: Programs) -> None:
    """The client's SYN to HOST:8080 reaches the backend from GW:40000 (port kept)."""
    check(
        hp,
        "syn",
        "from_container",
        sent(tcp(40000, 8080)),
        TC_ACT_REDIRECT,
        "REASON_HAIRPIN",
        TO_BACKEND,
    )


def test_hairpin_reply_back_to_client(hp: Programs) -> None:
    """The backend's SYN-ACK to GW is translated back to HOST:8080 -> client and delivered."""
    hp.run("from_container", sent(tcp(40000, 8080)))
    check(
        hp, "syn-ack", "from_container", REPLY, TC_ACT_REDIRECT, "REASON_HAIRPIN_REPLY", TO_CLIENT
    )


def test_hairpin_established_keeps_four_entries_together(hp: Programs) -> None:
    """SYN, SYN-ACK, ACK: all four entries are CT_ESTABLISHED; the ACK takes the tracked path."""
    hp.run("from_container", sent(tcp(40000, 8080)))
    hp.run("from_container", REPLY)
    check(
        hp,
        "ack",
        "from_container",
        sent(tcp(40000, 8080, "A")),
        TC_ACT_REDIRECT,
        "REASON_HAIRPIN",
        got(tcp(40000, 80, "A"), GW, CONT, CONT_MAC),
    )
    c, h, b, g = (IPAddress(a) for a in (CLI, HOST, CONT, GW))
    keys = {
        NatKey(c, h, 40000, 8080, TCP_P): (b, 80, EP_IFINDEX),
        NatKey(c, b, 40000, 80, TCP_P): (g, 40000, 0),
        NatKey(b, g, 80, 40000, TCP_P): (c, 40000, LO),
        NatKey(b, c, 80, 40000, TCP_P): (h, 8080, 0),
    }
    for key, (addr, port, ifindex) in keys.items():
        e = hp.maps.nat[key]
        assert (e.address, e.port, e.ifindex, e.state_name) == (
            addr,
            port,
            ifindex,
            "CT_ESTABLISHED",
        ), key


def test_hairpin_udp(hp: Programs) -> None:
    """A UDP query to HOST:5353 and its answer, both ways."""
    q = UDP(sport=41000, dport=5353) / Raw(b"q")
    check(
        hp,
        "query",
        "from_container",
        sent(q),
        TC_ACT_REDIRECT,
        "REASON_HAIRPIN",
        got(UDP(sport=41000, dport=53) / Raw(b"q"), GW, CONT, CONT_MAC),
    )
    a = UDP(sport=53, dport=41000) / Raw(b"a")
    check(
        hp,
        "answer",
        "from_container",
        sent(a, src=CONT, dst=GW, mac=CONT_MAC),
        TC_ACT_REDIRECT,
        "REASON_HAIRPIN_REPLY",
        got(UDP(sport=5353, dport=41000) / Raw(b"a"), HOST, CLI, CLI_MAC),
    )


def test_hairpin_taken_port_moves_into_range(hp: Programs) -> None:
    """When GW:40000 toward the backend is held by another live connection, the source port
    moves into the NAT range (here its only port, 45000) and the reply still finds its way."""
    hp.maps.config.host = HostConfig(LO, IPAddress(HOST), 45000, 45000)
    key = NatKey(IPAddress(CONT), IPAddress(GW), 80, 40000, TCP_P)
    hp.maps.nat[key] = NatEntry(IPAddress("10.0.0.9"), 40000, monotonic_ns() + LATER)
    check(
        hp,
        "syn",
        "from_container",
        sent(tcp(40000, 8080)),
        TC_ACT_REDIRECT,
        "REASON_HAIRPIN",
        got(tcp(45000, 80), GW, CONT, CONT_MAC),
    )
    check(
        hp,
        "syn-ack",
        "from_container",
        sent(tcp(80, 45000, "SA"), src=CONT, dst=GW, mac=CONT_MAC),
        TC_ACT_REDIRECT,
        "REASON_HAIRPIN_REPLY",
        TO_CLIENT,
    )


def test_hairpin_ttl_1_goes_to_the_stack_untouched(hp: Programs) -> None:
    """TTL 1 leaving a container: the host's stack is its first router (it answers time
    exceeded, or delivers to itself), so the packet goes to it unchanged, no entry written."""
    frame = sent(tcp(40000, 8080), ttl=1)
    before = hp.maps.metrics.counter("REASON_TTL_TO_STACK").packets
    entries = len(hp.maps.nat)
    verdict, out = hp.run("from_container", frame)
    assert verdict == TC_ACT_OK
    assert out == frame
    assert hp.maps.metrics.counter("REASON_TTL_TO_STACK").packets == before + 1
    assert len(hp.maps.nat) == entries


def test_from_netdev_ttl_1_is_a_counted_drop(hp: Programs) -> None:
    """TTL 1 to a published port from outside: from_netdev drops it, counted."""
    pkt = raw(Ether() / IP(src="203.0.113.5", dst=HOST, ttl=1) / tcp(50000, 8080))
    before = hp.maps.metrics.counter("DROP_TTL_EXCEEDED").packets
    assert hp.run("from_netdev", pkt)[0] == TC_ACT_SHOT
    assert hp.maps.metrics.counter("DROP_TTL_EXCEEDED").packets == before + 1

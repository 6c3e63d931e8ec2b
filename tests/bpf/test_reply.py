"""lib/reply.h through BPF_PROG_TEST_RUN: the replies to a service with no backends.

reply_test.bpf.o (test only) wraps reply4_tcp_rst and reply4_icmp_unreach in two TC programs
that parse the packet, turn it into its reply and return TC_ACT_OK, or TC_ACT_SHOT with the
DROP_* in .bss. Each reply is compared byte for byte with the one scapy builds (its checksums
computed by scapy), and its checksums are checked as a receiver that verifies them would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, IPOption_RR, in4_chksum
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from pydp.loader import BpfObject, Program, test_run
from pydp.maps import reason_name

from .packets import SKB_SIZE, TC_ACT_OK, TC_ACT_SHOT, VERDICTS, decode, skb_ctx

LO = 1  # test_run needs a real device: lo stands for the container's host-side veth
CONT, CONT_MAC, GW_MAC = "10.0.0.2", "02:00:00:00:00:02", "02:00:00:00:00:fe"
VIP = "10.96.0.10"  # the service without backends; also the ICMP errors' source
ICMP_P, TCP_P, UDP_P, EXP_P = 1, 6, 17, 253  # EXP_P: RFC 3692's experimental protocol
PORT_UNREACH, PROTO_UNREACH = 3, 2

NO_REPLY = "DROP_NO_REPLY"

# libbpf names an object's .bss map after the first 8 characters of the object's name.
BSS_MAP = "reply_te.bss"
SKB_GSO_SEGS, SKB_GSO_SIZE = 164, 176  # offsetof(struct __sk_buff, gso_segs / gso_size): UAPI


def from_cont(l3: Packet, dst_mac: str = GW_MAC) -> bytes:
    """A frame the container sends to its gateway."""
    return bytes(Ether(src=CONT_MAC, dst=dst_mac) / l3)


def to_vip(l4: Packet, **ip: object) -> bytes:
    """A frame from the container to the VIP."""
    return from_cont(IP(src=CONT, dst=VIP, **ip) / l4)


def rst(sport: int, dport: int, seq: int, ack: int, flags: str, tos: int = 0) -> bytes:
    """The reset the VIP answers with (tcp_v4_send_reset's headers)."""
    return bytes(
        Ether(src=GW_MAC, dst=CONT_MAC)
        / IP(src=VIP, dst=CONT, tos=tos, id=0, flags="DF", ttl=64)
        / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=0)
    )


def unreach(frame: bytes, quote: int, code: int = PORT_UNREACH) -> bytes:
    """The destination unreachable the VIP answers frame with, quoting its first quote bytes
    from the IP header on."""
    return bytes(
        Ether(src=GW_MAC, dst=CONT_MAC)
        / IP(src=VIP, dst=CONT, tos=0xC0, id=0, flags=0, ttl=64)
        / ICMP(type=3, code=code)
        / Raw(frame[14 : 14 + quote])
    )


def cut(frame: bytes, length: int) -> bytes:
    return frame[:length]


def pad(frame: bytes, length: int = 60) -> bytes:
    """frame with an Ethernet trailer up to length, as a NIC pads short frames."""
    return frame + bytes(length - len(frame))


def set_doff(frame: bytes, doff: int) -> bytes:
    """frame (TCP, no IP options) with the TCP data offset forced to doff."""
    out = bytearray(frame)
    out[14 + 20 + 12] = doff << 4
    return bytes(out)


@dataclass(frozen=True)
class ReplyCase:
    """One row: the packet in and its reply out, or, refused, the DROP_* (packet untouched)."""

    desc: str
    program: str  # test_tcp_rst or test_unreach
    packet: bytes
    expect: bytes | None  # None: refused with reason
    reason: str = ""
    code: int = PORT_UNREACH  # test_unreach's ICMP code (CFG_REPLY_CODE)
    gso: tuple[int, int] = (0, 0)  # the skb's (gso_segs, gso_size)


SYN = TCP(sport=40000, dport=80, flags="S", seq=1000)
SYN_OPTS = TCP(
    sport=40000,
    dport=80,
    flags="S",
    seq=1000,
    options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (7, 0)), ("NOP", None), ("WScale", 7)],
)
DATA = TCP(sport=40000, dport=80, flags="PA", seq=1000, ack=5000) / Raw(b"GET / HTTP/1.0\r\n")
RA = IPOption_Router_Alert()  # 4 bytes: ihl 6
RR9 = IPOption_RR(routers=["192.0.2.1"] * 9)  # 40 bytes: ihl 15, the longest IP header
UDP_Q = UDP(sport=40000, dport=53)

UDP_SHORT = to_vip(UDP_Q / Raw(b"hi"))
UDP_LONG = to_vip(UDP_Q / Raw(bytes(range(200))))
UDP_EMPTY = to_vip(UDP_Q)
UDP_RA = to_vip(UDP_Q / Raw(b"query"), options=[RA])
UDP_RR9 = to_vip(UDP_Q / Raw(b"query"), options=[RR9])
UDP_FIRST_FRAG = to_vip(UDP_Q / Raw(bytes(64)), flags="MF", id=7)
UDP_TOS = to_vip(UDP_Q / Raw(b"voice"), tos=0xB8)
EXP_3 = to_vip(Raw(b"abc"), proto=EXP_P)  # 3 bytes after the header: an odd quote
PING = to_vip(ICMP(type=8, id=7, seq=1) / Raw(b"ping"))
TCP_SYN = to_vip(SYN)

TCP_CASES = [
    ReplyCase(
        "syn: rst|ack, ack = seq + 1",
        "test_tcp_rst",
        to_vip(SYN),
        rst(80, 40000, 0, 1001, "RA"),
    ),
    ReplyCase(
        "syn with options: rst|ack without them",
        "test_tcp_rst",
        to_vip(SYN_OPTS),
        rst(80, 40000, 0, 1001, "RA"),
    ),
    ReplyCase(
        "syn with ip options and tos: options dropped (ihl 5), tos kept",
        "test_tcp_rst",
        to_vip(SYN, tos=0x10, options=[RA]),
        rst(80, 40000, 0, 1001, "RA", tos=0x10),
    ),
    ReplyCase(
        "syn with the longest ip header",
        "test_tcp_rst",
        to_vip(SYN, options=[RR9]),
        rst(80, 40000, 0, 1001, "RA"),
    ),
    ReplyCase(
        "syn with data: ack = seq + 1 + payload",
        "test_tcp_rst",
        to_vip(SYN / Raw(b"early")),
        rst(80, 40000, 0, 1006, "RA"),
    ),
    ReplyCase(
        "syn in a padded frame: the payload length is the ip header's, not the frame's",
        "test_tcp_rst",
        pad(to_vip(SYN)),
        rst(80, 40000, 0, 1001, "RA"),
    ),
    ReplyCase(
        "ack with payload: rst alone, seq = its ack",
        "test_tcp_rst",
        to_vip(DATA),
        rst(80, 40000, 5000, 0, "R"),
    ),
    ReplyCase(
        "bare ack of exactly the reset's size: rst, seq = its ack",
        "test_tcp_rst",
        to_vip(TCP(sport=40000, dport=80, flags="A", seq=1000, ack=0xFFFFFFF0)),
        rst(80, 40000, 0xFFFFFFF0, 0, "R"),
    ),
    ReplyCase(
        "fin|ack: rst, seq = its ack",
        "test_tcp_rst",
        to_vip(TCP(sport=40000, dport=80, flags="FA", seq=1000, ack=5000)),
        rst(80, 40000, 5000, 0, "R"),
    ),
    ReplyCase(
        "fin without ack, seq wrapping: rst|ack, ack = seq + payload + 1",
        "test_tcp_rst",
        to_vip(TCP(sport=40000, dport=80, flags="F", seq=0xFFFFFFFE) / Raw(b"xy")),
        rst(80, 40000, 0, 1, "RA"),  # 0xfffffffe + 2 + 1 wraps to 1
    ),
    ReplyCase(
        "gso data segment: rst, the skb no longer gso",
        "test_tcp_rst",
        to_vip(DATA),
        rst(80, 40000, 5000, 0, "R"),
        gso=(3, 1000),
    ),
    ReplyCase(
        "rst: never answered",
        "test_tcp_rst",
        to_vip(TCP(sport=40000, dport=80, flags="R", seq=1000)),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "rst|ack: never answered",
        "test_tcp_rst",
        to_vip(TCP(sport=40000, dport=80, flags="RA", seq=1000, ack=5)),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "syn to a broadcast mac: not answered",
        "test_tcp_rst",
        from_cont(IP(src=CONT, dst=VIP) / SYN, dst_mac="ff:ff:ff:ff:ff:ff"),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "syn to a multicast address: not answered",
        "test_tcp_rst",
        from_cont(IP(src=CONT, dst="224.0.0.251") / SYN),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "syn from 0.0.0.0: not answered",
        "test_tcp_rst",
        from_cont(IP(src="0.0.0.0", dst=VIP) / SYN),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "first fragment: not answered (its length is the datagram's)",
        "test_tcp_rst",
        to_vip(SYN / Raw(bytes(16)), flags="MF"),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "segment cut short of its ip length: refused",
        "test_tcp_rst",
        cut(to_vip(DATA), 14 + 20 + 20 + 4),
        None,
        "DROP_INVALID_IP",
    ),
    ReplyCase(
        "data offset under 5: refused",
        "test_tcp_rst",
        set_doff(to_vip(SYN), 4),
        None,
        "DROP_INVALID_L4",
    ),
    ReplyCase(
        "udp: no tcp reset",
        "test_tcp_rst",
        UDP_SHORT,
        None,
        "DROP_INVALID_L4",
    ),
]

ICMP_CASES = [
    ReplyCase(
        "udp, short payload: port unreachable quoting the ip header and 8 bytes",
        "test_unreach",
        UDP_SHORT,
        unreach(UDP_SHORT, 28),
    ),
    ReplyCase(
        "udp, long payload: the quote stops 8 bytes after the ip header",
        "test_unreach",
        UDP_LONG,
        unreach(UDP_LONG, 28),
    ),
    ReplyCase(
        "udp, empty: the frame keeps its length",
        "test_unreach",
        UDP_EMPTY,
        unreach(UDP_EMPTY, 28),
    ),
    ReplyCase(
        "udp in a padded frame: the trailer is not quoted",
        "test_unreach",
        pad(UDP_SHORT),
        unreach(UDP_SHORT, 28),
    ),
    ReplyCase(
        "udp with ip options: quoted with them",
        "test_unreach",
        UDP_RA,
        unreach(UDP_RA, 32),
    ),
    ReplyCase(
        "udp with the longest ip header: a 68-byte quote",
        "test_unreach",
        UDP_RR9,
        unreach(UDP_RR9, 68),
    ),
    ReplyCase(
        "udp with tos: the error's tos is 0xc0",
        "test_unreach",
        UDP_TOS,
        unreach(UDP_TOS, 28),
    ),
    ReplyCase(
        "udp, first fragment: answered, quoting it",
        "test_unreach",
        UDP_FIRST_FRAG,
        unreach(UDP_FIRST_FRAG, 28),
    ),
    ReplyCase(
        "tcp: its ports and sequence number quoted",
        "test_unreach",
        TCP_SYN,
        unreach(TCP_SYN, 28),
    ),
    ReplyCase(
        "echo request (not an error): answered",
        "test_unreach",
        PING,
        unreach(PING, 28),
    ),
    ReplyCase(
        "3 bytes after the header: protocol unreachable with an odd-length quote",
        "test_unreach",
        EXP_3,
        unreach(EXP_3, 23, PROTO_UNREACH),
        code=PROTO_UNREACH,
    ),
    ReplyCase(
        "icmp error: never answered",
        "test_unreach",
        to_vip(ICMP(type=3, code=3) / Raw(UDP_SHORT[14:42])),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "non-first fragment: not answered",
        "test_unreach",
        to_vip(Raw(bytes(16)), proto=UDP_P, frag=8),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "to the limited broadcast: not answered",
        "test_unreach",
        from_cont(IP(src=CONT, dst="255.255.255.255") / UDP_Q, dst_mac="ff:ff:ff:ff:ff:ff"),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "to a multicast mac: not answered",
        "test_unreach",
        from_cont(IP(src=CONT, dst=VIP) / UDP_Q, dst_mac="01:00:5e:00:00:fb"),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "from a multicast address: not answered",
        "test_unreach",
        from_cont(IP(src="224.0.0.1", dst=VIP) / UDP_Q),
        None,
        NO_REPLY,
    ),
    ReplyCase(
        "gso: refused",
        "test_unreach",
        UDP_LONG,
        None,
        NO_REPLY,
        gso=(2, 100),
    ),
    ReplyCase(
        "gso size alone: refused",
        "test_unreach",
        UDP_LONG,
        None,
        NO_REPLY,
        gso=(0, 100),
    ),
    ReplyCase(
        "udp cut short of its ip length (quote there): refused as truncated",
        "test_unreach",
        cut(UDP_LONG, 14 + 28 + 2),
        None,
        "DROP_INVALID_IP",
    ),
    ReplyCase(
        "quote cut short: refused",
        "test_unreach",
        cut(to_vip(Raw(bytes(8)), proto=EXP_P), 14 + 20 + 4),
        None,
        "DROP_INVALID_IP",
    ),
    ReplyCase(
        "udp cut inside its header: refused (by parsing)",
        "test_unreach",
        cut(UDP_SHORT, 14 + 20 + 4),
        None,
        "DROP_INVALID_L4",
    ),
]

CASES = TCP_CASES + ICMP_CASES


@dataclass
class ReplyProgs:
    objs: dict[int, BpfObject]  # by CFG_REPLY_CODE

    def run(self, case: ReplyCase) -> tuple[int, bytes, int]:
        """Run case's packet; the verdict, the packet as it left, the DROP_* recorded."""
        obj = self.objs[case.code]
        ctx = bytearray(skb_ctx(LO))
        segs, size = case.gso
        ctx[SKB_GSO_SEGS : SKB_GSO_SEGS + 4] = segs.to_bytes(4, "little")
        ctx[SKB_GSO_SIZE : SKB_GSO_SIZE + 4] = size.to_bytes(4, "little")
        assert len(ctx) == SKB_SIZE
        prog: Program = obj.program(case.program)
        result = test_run(prog, case.packet, ctx=bytes(ctx))
        bss = obj.map(BSS_MAP).lookup(bytes(4))
        assert bss is not None
        return result.verdict, result.packet, int.from_bytes(bss[:4], "little")


@pytest.fixture(scope="module")
def reply_progs(bpffs: Path) -> Iterator[ReplyProgs]:
    """Module scope, needs bpffs: reply_test.bpf.o loaded twice, sending its ICMP errors from
    the VIP with code 3 (port unreachable) and 2 (protocol unreachable)."""
    with (
        BpfObject("reply_test.bpf.o") as port,
        BpfObject("reply_test.bpf.o") as proto,
    ):
        for obj, code in ((port, PORT_UNREACH), (proto, PROTO_UNREACH)):
            obj.set_rodata("CFG_REPLY_SRC", bytes(int(b) for b in VIP.split(".")))
            obj.set_rodata("CFG_REPLY_CODE", code)
            obj.load()
        yield ReplyProgs({PORT_UNREACH: port, PROTO_UNREACH: proto})


def assert_checksums_valid(desc: str, frame: bytes) -> None:
    """frame parses as IPv4 with TCP or ICMP, and every checksum verifies, as a receiver
    that checks them (CHECKSUM_NONE) would."""
    pkt = Ether(frame)
    assert IP in pkt, f"{desc}: no IPv4 in the reply"
    ip = pkt[IP]
    ihl = ip.ihl * 4
    assert ip.len == len(frame) - 14, f"{desc}: ip length {ip.len}, frame {len(frame)}"
    assert checksum(frame[14 : 14 + ihl]) == 0, f"{desc}: bad ip checksum"
    l4 = frame[14 + ihl : 14 + ip.len]
    if ip.proto == TCP_P:
        assert TCP in pkt, f"{desc}: scapy finds no tcp header"
        assert in4_chksum(TCP_P, ip, l4) == 0, f"{desc}: bad tcp checksum"
    else:
        assert ip.proto == ICMP_P and ICMP in pkt, f"{desc}: neither tcp nor icmp"
        assert checksum(l4) == 0, f"{desc}: bad icmp checksum"


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_reply_table(reply_progs: ReplyProgs, case: ReplyCase) -> None:
    """Each row's packet becomes exactly its reply (TC_ACT_OK, valid checksums) or is refused
    untouched with its DROP_* (TC_ACT_SHOT)."""
    verdict, got, reason = reply_progs.run(case)
    want_verdict = TC_ACT_SHOT if case.expect is None else TC_ACT_OK
    assert verdict == want_verdict, (
        f"{case.desc}: verdict {VERDICTS.get(verdict, verdict)} ({reason_name(reason)}), "
        f"expected {VERDICTS[want_verdict]}"
    )
    if case.expect is None:
        assert reason_name(reason) == case.reason, f"{case.desc}: refused with the wrong reason"
        assert got == case.packet, f"{case.desc}: refused but changed\n{decode(got)}"
        return
    assert reason == 0
    assert got == case.expect, (
        f"{case.desc}: output differs\n--- got\n{decode(got)}\n--- expected\n{decode(case.expect)}"
    )
    assert_checksums_valid(case.desc, got)


def test_reply_rst_fields_match_the_syn(reply_progs: ReplyProgs) -> None:
    """Decoded by scapy, the reset to a SYN is the one the sender's connection takes: ports
    swapped, RST|ACK acknowledging exactly the SYN, back to the sender's MAC and address."""
    verdict, got, _ = reply_progs.run(ReplyCase("syn", "test_tcp_rst", to_vip(SYN_OPTS), None))
    assert verdict == TC_ACT_OK
    pkt = Ether(got)
    assert (pkt.dst, pkt[IP].dst, pkt[TCP].dport) == (CONT_MAC, CONT, 40000)
    assert (pkt.src, pkt[IP].src, pkt[TCP].sport) == (GW_MAC, VIP, 80)
    assert pkt[TCP].flags == "RA" and pkt[TCP].ack == SYN_OPTS.seq + 1
    assert_checksums_valid("syn", got)

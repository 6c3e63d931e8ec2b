"""Crafted frames for ``BPF_PROG_TEST_RUN``: Ethernet / IPv4 / TCP with a valid IP checksum."""

from __future__ import annotations

import struct

from netaddr import EUI, IPAddress

__all__ = ["ip4_checksum", "tcp4_frame", "udp4_frame"]

ETH_P_IP = 0x0800
IPPROTO_TCP = 6
TCP_SYN = 0x02
IPPROTO_UDP = 17


def ip4_checksum(header: bytes) -> int:
    """The Internet checksum of an IPv4 header whose checksum field is zero."""
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp4_frame(
    src_mac: EUI,
    dst_mac: EUI,
    saddr: IPAddress,
    daddr: IPAddress,
    sport: int = 40000,
    dport: int = 80,
    payload: bytes = b"",
) -> bytes:
    """An Ethernet frame (no FCS) carrying an IPv4 TCP SYN with payload."""
    eth = dst_mac.packed + src_mac.packed + struct.pack("!H", ETH_P_IP)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, TCP_SYN, 65535, 0, 0)
    length = 20 + len(tcp) + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, length, 1, 0x4000, 64, IPPROTO_TCP, 0, saddr.packed, daddr.packed
    )
    ip = ip[:10] + struct.pack("!H", ip4_checksum(ip)) + ip[12:]
    return eth + ip + tcp + payload


def udp4_frame(
    src_mac: EUI,
    dst_mac: EUI,
    saddr: IPAddress,
    daddr: IPAddress,
    sport: int = 40000,
    dport: int = 53,
    payload: bytes = b"",
    ttl: int = 64,
) -> bytes:
    """An Ethernet frame (no FCS) carrying an IPv4 UDP datagram whose IP and UDP checksums
    are both valid (the UDP one computed in full over the pseudo-header, as a NIC sends)."""
    eth = dst_mac.packed + src_mac.packed + struct.pack("!H", ETH_P_IP)
    length = 8 + len(payload)
    pseudo = saddr.packed + daddr.packed + struct.pack("!BBH", 0, IPPROTO_UDP, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    check = ip4_checksum(pseudo + udp + b"\0" * (len(udp) % 2)) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", check) + udp[8:]
    fields = (0x45, 0, 20 + length, 1, 0x4000, ttl, IPPROTO_UDP, 0, saddr.packed, daddr.packed)
    ip = struct.pack("!BBHHHBBH4s4s", *fields)
    ip = ip[:10] + struct.pack("!H", ip4_checksum(ip)) + ip[12:]
    return eth + ip + udp

"""reach: the moment an address starts answering, seen from the namespace this runs in.

    python reach.py ADDR PORT TIMEOUT INTERVAL

Sends a one-byte UDP datagram to ADDR:PORT every INTERVAL seconds from one connected
socket (IP_RECVERR on) until an ICMP port unreachable comes back from ADDR itself: only
the host holding ADDR answers so (nothing listens on PORT there), so that reply proves a
round trip to the address, not to a router. Errors from anyone else (network or host
unreachable while no route or tunnel exists yet) are counted and ignored.

Prints ``sending`` once the first datagram left, then one JSON line: ``reached``
(CLOCK_MONOTONIC seconds of the first answer, comparable with ``time.monotonic()`` of any
process on the machine; null after TIMEOUT seconds), ``sent`` and ``other_errors``.
Used by the overlay benchmark's propagation figure (bench/test_overlay_bench.py).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

IP_RECVERR = 11
SO_EE_ORIGIN_ICMP = 2
ICMP_DEST_UNREACH, ICMP_PORT_UNREACH = 3, 3
EE_SIZE = 16  # struct sock_extended_err; the offender's sockaddr_in follows it


def _answer(sock: socket.socket, addr: bytes) -> bool | None:
    """Read one queued error: True for a port unreachable from addr, False for any other
    error, None when the queue is empty."""
    try:
        _, ancdata, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except BlockingIOError:
        return None
    for level, kind, data in ancdata:
        if level != socket.IPPROTO_IP or kind != IP_RECVERR or len(data) < EE_SIZE + 8:
            continue
        _, origin, icmp_type, icmp_code = struct.unpack_from("=IBBB", data)
        offender = data[EE_SIZE + 4 : EE_SIZE + 8]
        icmp = (origin, icmp_type, icmp_code) == (
            SO_EE_ORIGIN_ICMP,
            ICMP_DEST_UNREACH,
            ICMP_PORT_UNREACH,
        )
        return icmp and offender == addr
    return False


def main(target: str, port: int, timeout: float, interval: float) -> dict[str, object]:
    addr = socket.inet_aton(target)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    sock.setblocking(False)
    sock.connect((target, port))
    poller = select.poll()
    poller.register(sock, select.POLLERR)
    sent = other = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sock.send(b"x")
            sent += 1
        except OSError:  # a queued error reported by send; it stays in the error queue
            pass
        if sent == 1:
            print("sending", flush=True)
        wake = time.monotonic() + interval
        while (left := wake - time.monotonic()) > 0:
            if not poller.poll(left * 1000):  # POLLERR: an error is queued
                continue
            while (answer := _answer(sock, addr)) is not None:
                if answer:
                    return {"reached": time.monotonic(), "sent": sent, "other_errors": other}
                other += 1
    return {"reached": None, "sent": sent, "other_errors": other}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0], int(args[1]), float(args[2]), float(args[3]))), flush=True)

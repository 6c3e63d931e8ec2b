"""Reading links, addresses and routes straight off an rtnetlink socket.

pyroute2 0.9 decodes every attribute of every message through asyncio, about
0.7 ms per link: a dump of 1,000 links would take most of a second. Reads
are what the reconciler does most, so they take this path instead: one
plain socket, one request, and `struct` on the dozen attributes pydp uses
(about 70 times faster). Changes still go through pyroute2.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Iterator

import netaddr

from pydp.net.links import IFF_UP, Link, Route, mac_from_bytes

__all__ = ["Reader", "RtnlError"]

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_GROUP, IFLA_EXT_MASK, IFLA_LINK_NETNSID = 18, 20, 27, 29, 37
IFLA_INFO_KIND = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTN_UNICAST = 1
NLA_TYPE_MASK = 0x3FFF

_NLMSGHDR = struct.Struct("=LHHLL")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_RECV_SIZE = 1 << 16


class RtnlError(OSError):
    """The kernel answered a read with an error (``errno`` holds it)."""


def _attr(kind: int, value: bytes) -> bytes:
    size = _NLATTR.size + len(value)
    return _NLATTR.pack(size, kind) + value + b"\0" * (-size & 3)


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    found = {}
    while offset + _NLATTR.size <= len(data):
        size, kind = _NLATTR.unpack_from(data, offset)
        if size < _NLATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + _NLATTR.size : offset + size]
        offset += (size + 3) & ~3
    return found


def _u32(value: bytes | None) -> int | None:
    return None if value is None else int(_U32.unpack_from(value)[0])


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.split(b"\0", 1)[0].decode(errors="replace")


def _ip(family: int, value: bytes) -> netaddr.IPAddress:
    return netaddr.IPAddress(socket.inet_ntop(family, value))


def _link(data: bytes) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, _NLMSGHDR.size)
    attrs = _attrs(data, _NLMSGHDR.size + _IFINFOMSG.size)
    info = _attrs(attrs.get(IFLA_LINKINFO, b""), 0)
    peer = _u32(attrs.get(IFLA_LINK))
    return Link(
        name=_text(attrs.get(IFLA_IFNAME)) or "",
        ifindex=index,
        kind=_text(info.get(IFLA_INFO_KIND)),
        mac=mac_from_bytes(attrs.get(IFLA_ADDRESS)),
        mtu=_u32(attrs.get(IFLA_MTU)) or 0,
        alias=_text(attrs.get(IFLA_IFALIAS)) or None,
        master=_u32(attrs.get(IFLA_MASTER)) or None,
        up=bool(flags & IFF_UP),
        peer_ifindex=None if not peer or peer == index else peer,
        peer_netnsid=_u32(attrs.get(IFLA_LINK_NETNSID)),
        group=_u32(attrs.get(IFLA_GROUP)) or 0,
    )


class Reader:
    """A plain rtnetlink socket in the calling thread's namespace, for reads only."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            sock.bind((0, 0))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._seq = itertools.count(1)

    def close(self) -> None:
        """Close the socket; idempotent."""
        self._sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> Iterator[bytes]:
        """Send one request; yield each answer message (header included)."""
        seq = next(self._seq)
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0)
        self._sock.send(header + body)
        while True:
            data = self._sock.recv(_RECV_SIZE)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                size, mtype, mflags, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                message = data[offset : offset + size]
                offset += (size + 3) & ~3
                if mseq != seq:
                    continue  # a late answer to an earlier, interrupted request
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", message, _NLMSGHDR.size)[0]
                    if code:
                        raise RtnlError(code, os.strerror(code))
                    return
                yield message
                if not mflags & 0x2:  # NLM_F_MULTI: a single answer ends here
                    return

    def links(self) -> list[Link]:
        """Every link, by ifindex."""
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0)
        body += _attr(IFLA_EXT_MASK, _U32.pack(RTEXT_FILTER_SKIP_STATS))
        found = [_link(msg) for msg in self._request(RTM_GETLINK, NLM_F_DUMP, body)]
        return sorted(found, key=lambda link: link.ifindex)

    def link(self, name: str) -> Link | None:
        """The link called ``name``, or None."""
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
        body += _attr(IFLA_EXT_MASK, _U32.pack(RTEXT_FILTER_SKIP_STATS))
        try:
            for msg in self._request(RTM_GETLINK, 0, body):
                return _link(msg)
        except RtnlError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return None

    def addresses(self, ifindex: int) -> list[netaddr.IPNetwork]:
        """The addresses on ``ifindex``, IPv4 then IPv6."""
        return self.all_addresses(ifindex).get(ifindex, [])

    def all_addresses(self, ifindex: int = 0) -> dict[int, list[netaddr.IPNetwork]]:
        """Addresses by ifindex, IPv4 then IPv6: of every link, or of ``ifindex`` alone."""
        found: dict[int, list[netaddr.IPNetwork]] = {}
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, ifindex)
        for msg in self._request(RTM_GETADDR, NLM_F_DUMP, body):
            family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(msg, _NLMSGHDR.size)
            attrs = _attrs(msg, _NLMSGHDR.size + _IFADDRMSG.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if (not ifindex or index == ifindex) and raw is not None:
                net = netaddr.IPNetwork(f"{_ip(family, raw)}/{prefixlen}")
                found.setdefault(index, []).append(net)
        for nets in found.values():
            nets.sort(key=lambda net: (net.version, net.value, net.prefixlen))
        return found

    def routes(self, family: int, table: int) -> list[Route]:
        """The unicast routes of ``table`` for ``family``."""
        found = []
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        body += _attr(RTA_TABLE, _U32.pack(table))
        for msg in self._request(RTM_GETROUTE, NLM_F_DUMP, body):
            fam, dst_len, _, _, tab, _, _, rtype, _ = _RTMSG.unpack_from(msg, _NLMSGHDR.size)
            attrs = _attrs(msg, _NLMSGHDR.size + _RTMSG.size)
            if (_u32(attrs.get(RTA_TABLE)) or tab) != table or rtype != RTN_UNICAST:
                continue
            dst = attrs.get(RTA_DST)
            first = (
                _ip(fam, dst) if dst else netaddr.IPAddress(0, 4 if fam == socket.AF_INET else 6)
            )
            gateway = attrs.get(RTA_GATEWAY)
            found.append(
                Route(
                    dst=netaddr.IPNetwork(f"{first}/{dst_len}"),
                    gateway=None if gateway is None else _ip(fam, gateway),
                    ifindex=_u32(attrs.get(RTA_OIF)),
                    metric=_u32(attrs.get(RTA_PRIORITY)) or 0,
                )
            )
        return found

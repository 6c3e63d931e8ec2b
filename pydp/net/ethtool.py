"""The one ethtool setting pydp needs: GRO on a veth, through the SIOCETHTOOL ioctl."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import socket

from pydp.errors import DatapathError
from pydp.net.host import NetHost
from pydp.net.netns import entered

__all__ = ["enable_gro"]

log = logging.getLogger(__name__)

SIOCETHTOOL = 0x8946
ETHTOOL_GGRO, ETHTOOL_SGRO = 0x2B, 0x2C


class _Value(ctypes.Structure):
    _fields_ = (("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32))


class _Ifreq(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char * 16),
        ("data", ctypes.c_void_p),
        ("pad", ctypes.c_char * 16),
    )


def _ethtool(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    value = _Value(cmd, data)
    req = _Ifreq(ifname.encode(), ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)
    return int(value.data)


def enable_gro(host: NetHost, ifname: str) -> bool:
    """Turn GRO on for ``ifname`` in ``host``'s namespace unless it is on; True if it changed.
    A veth that receives frames XDP_REDIRECTed into its peer needs it (veth's NAPI path)."""
    ctx = contextlib.nullcontext() if host.netns is None else entered(host.netns)
    where = f"{ifname}{'' if host.netns is None else ' in netns ' + host.netns}"
    with ctx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            if _ethtool(sock, ifname, ETHTOOL_GGRO):
                return False
            _ethtool(sock, ifname, ETHTOOL_SGRO, 1)
        except OSError as exc:
            raise DatapathError.from_errno(
                f"enable gro on {where}", exc.errno or errno.EIO
            ) from exc
    log.info("enabled gro on %s", where)
    return True

"""The rtnetlink sockets of one network namespace, with pydp errors for the kernel's.

A `Socket` is bound to a namespace when it is made: the calling thread's
current one, or a named one. Reads go through `Reader` (plain socket,
decoded with `struct`); changes through a pyroute2 ``IPRoute`` opened on
first use (pyroute2 itself is imported then: its package import takes ~0.17 s,
which a command that only reads never pays). Both sockets are opened by moving
the calling thread into the namespace for the ``socket()`` call only (no helper
process).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydp.errors import ConflictError, DatapathError, NotFoundError, PydpError
from pydp.net._rtnl import Reader
from pydp.net.netns import entered, open_netns

__all__ = ["Socket", "kernel_error"]

_T = TypeVar("_T")
_CLASSES: dict[int, type[PydpError]] = {
    errno.EEXIST: ConflictError,
    errno.EBUSY: ConflictError,
    errno.ENODEV: NotFoundError,
    errno.ENOENT: NotFoundError,
    errno.ESRCH: NotFoundError,
}
_PRIVILEGE = " (run as root, or with CAP_NET_ADMIN)"


def kernel_error(operation: str, code: int, words: str | None = None) -> PydpError:
    """``operation: <the kernel's words>`` as the pydp error that fits ``code``."""
    words = words or os.strerror(code)
    if code in (errno.EPERM, errno.EACCES):
        words += _PRIVILEGE
    return _CLASSES.get(code, DatapathError)(f"{operation}: {words}", code)


class Socket:
    """Netlink access to the calling thread's namespace, or to the named ``netns``.

    Use it from the thread that made it: pyroute2 0.9 would silently open
    another socket, in that thread's namespace, for every other thread.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.where = "" if netns is None else f" in netns {netns}"
        self._thread = threading.get_ident()
        self._ipr: Any = None
        if netns is None:
            self.nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        else:
            self.nsfd = open_netns(netns)
        try:
            self.reader = self._inside("open netlink socket", Reader)
        except BaseException:
            os.close(self.nsfd)
            raise

    def _inside(self, operation: str, factory: Callable[[], _T]) -> _T:
        """``factory()`` run with the thread in this namespace."""
        try:
            with entered(self.nsfd):
                return factory()
        except OSError as exc:
            raise kernel_error(operation + self.where, exc.errno or errno.EIO) from exc

    def _check_thread(self, operation: str) -> None:
        if threading.get_ident() != self._thread:
            raise DatapathError(f"{operation}{self.where}: netlink socket used from another thread")
        if self.nsfd < 0:
            raise DatapathError(f"{operation}{self.where}: netlink socket closed")

    def read(self, operation: str, method: Callable[..., _T], *args: Any) -> _T:
        """Return ``method(*args)`` (a `Reader` method), raising pydp errors."""
        self._check_thread(operation)
        try:
            return method(*args)
        except OSError as exc:
            raise kernel_error(operation + self.where, exc.errno or errno.EIO) from exc

    def call(self, operation: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Return ``ipr.<method>(*args, **kwargs)``, raising pydp errors named ``operation``."""
        self._check_thread(operation)
        from pyroute2 import IPRoute  # here, not at the top: see the module's docstring
        from pyroute2.netlink.exceptions import NetlinkError

        if self._ipr is None:
            self._ipr = self._inside(
                "open netlink socket", lambda: IPRoute(ext_ack=True, strict_check=True, groups=0)
            )
        try:
            return getattr(self._ipr, method)(*args, **kwargs)
        except NetlinkError as exc:
            words = exc.args[1] if len(exc.args) > 1 and exc.args[1] else None
            raise kernel_error(operation + self.where, exc.code, words) from exc
        except OSError as exc:
            raise kernel_error(operation + self.where, exc.errno or errno.EIO) from exc

    def close(self) -> None:
        """Close the sockets and the namespace's file descriptor; idempotent."""
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            ipr.close()
        self.reader.close()
        if self.nsfd >= 0:
            os.close(self.nsfd)
            self.nsfd = -1

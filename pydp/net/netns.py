"""Named network namespaces (``/run/netns/<name>``, as ``ip netns`` keeps them).

Everything is done in-process: `netns_create` unshares the calling thread
into a new namespace, bind-mounts it under ``/run/netns`` and moves the
thread back, with no fork or exec (about 10 times cheaper than ``ip netns
add``). `entered` moves the calling thread into a named namespace for a
``with`` block, the way `NetHost` opens a netlink socket there.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
from collections.abc import Iterator

from pydp.errors import ConfigError, DatapathError, NotFoundError, PydpError

__all__ = [
    "NETNS_RUN_DIR",
    "entered",
    "netns_create",
    "netns_delete",
    "netns_exists",
    "netns_list",
    "netns_path",
    "open_netns",
]

log = logging.getLogger(__name__)

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2
_THREAD_NETNS = "/proc/thread-self/ns/net"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, operation: str) -> None:
    if result != 0:
        raise DatapathError.from_errno(operation, ctypes.get_errno())


def netns_path(name: str) -> str:
    """The path of the named namespace ``name``, after checking the name."""
    bad = not name or "/" in name or name in (".", "..") or len(name.encode()) > 255
    if bad or "\0" in name:
        raise ConfigError(f"netns: expected a file name of 1-255 bytes, got {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name: str) -> bool:
    """True if the named namespace ``name`` exists."""
    return os.path.ismount(netns_path(name))


def netns_list(prefix: str = "") -> list[str]:
    """Names of the named namespaces starting with ``prefix``, sorted."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.startswith(prefix))


def open_netns(name: str) -> int:
    """Open the named namespace ``name`` and return the file descriptor (close it)."""
    try:
        return os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        cls = NotFoundError if exc.errno == errno.ENOENT else DatapathError
        raise cls.from_errno(f"open netns {name}", exc.errno or errno.EIO) from exc


def _setns(fd: int, what: str) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), f"enter netns {what}")


@contextlib.contextmanager
def _returning() -> Iterator[None]:
    """Run the block, then move the calling thread back to the namespace it was in."""
    saved = os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield
    finally:
        try:
            _setns(saved, "of the caller")
        finally:
            os.close(saved)


@contextlib.contextmanager
def entered(name: str | int) -> Iterator[None]:
    """Move the calling thread into netns ``name`` (or an open fd) for the block."""
    with _returning():
        target = open_netns(name) if isinstance(name, str) else name
        try:
            _setns(target, str(name))
        finally:
            if isinstance(name, str):
                os.close(target)
        yield


def _share_run_dir() -> None:
    """Make ``/run/netns`` a shared mount (iproute2 does the same)."""
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    run_dir = NETNS_RUN_DIR.encode()
    if _libc.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(run_dir, run_dir, b"none", MS_BIND | MS_REC, None), "bind /run/netns")
    _check(_libc.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None), "share /run/netns")


def netns_create(name: str) -> None:
    """Create the named namespace ``name``; one that exists already is success."""
    path = netns_path(name)
    if os.path.ismount(path):
        return
    operation = f"create netns {name}"
    try:
        _share_run_dir()
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
        with _unshared(operation):
            _check(
                _libc.mount(_THREAD_NETNS.encode(), path.encode(), b"none", MS_BIND, None),
                operation,
            )
    except OSError as exc:
        _unlink(path)
        raise DatapathError.from_errno(operation, exc.errno or errno.EIO) from exc
    except PydpError:
        _unlink(path)
        raise
    log.info("create netns %s", name)


@contextlib.contextmanager
def _unshared(operation: str) -> Iterator[None]:
    """Run the block in a new network namespace, then go back."""
    with _returning():
        _check(_libc.unshare(CLONE_NEWNET), operation)
        yield


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def netns_kill(name: str) -> list[int]:
    """SIGKILL every process whose network namespace is ``name`` (a container's processes,
    as ``docker rm -f`` does); returns their pids."""
    try:
        target = os.stat(netns_path(name))
    except FileNotFoundError:
        return []
    killed = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue  # gone, or a kernel thread
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino) and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
    if killed:
        log.info("killed %d processes in netns %s", len(killed), name)
    return killed


def netns_delete(name: str) -> None:
    """Delete the named namespace ``name``, killing its processes first (what was running
    in a removed sandbox must not live on in an anonymous namespace); one already gone is
    success."""
    path = netns_path(name)
    if not os.path.lexists(path):
        return
    netns_kill(name)
    if os.path.ismount(path) and _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:  # EINVAL: not a mount point (any more)
            raise DatapathError.from_errno(f"delete netns {name}", err)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DatapathError.from_errno(f"delete netns {name}", exc.errno or errno.EIO) from exc
    log.info("delete netns %s", name)


def sysctl(key: str, value: str, netns: str | None = None) -> bool:
    """Set ``net.*`` sysctl ``key`` (dotted) in the current namespace or in ``netns`` when it
    differs; True if it changed. ``/proc/sys/net`` shows the namespace of the thread."""
    path = "/proc/sys/" + key.replace(".", "/")
    ctx = contextlib.nullcontext() if netns is None else entered(netns)
    with ctx:
        try:
            with open(path) as f:
                if f.read().strip() == value:
                    return False
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise DatapathError.from_errno(f"set {key}={value}", exc.errno or errno.EIO) from exc
    log.info("set %s=%s%s", key, value, "" if netns is None else f" in netns {netns}")
    return True

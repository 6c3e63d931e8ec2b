"""Test topologies: hosts and containers as network namespaces joined by veths.

A `Topology` owns every namespace it creates and deletes them all on `close`
(also at interpreter exit and on SIGTERM), never touching anything else.
Namespace names embed the creating pid (``pd<pid>t<n>-<name>``), so
`cleanup_stale` can remove what dead runs left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Mapping
from types import FrameType, TracebackType
from typing import Any, Protocol, TypeVar

from pydp.testing import _proc
from pydp.testing._names import check_label, netns_name, netns_pid, topology_prefix
from pydp.testing.errors import TopologyError
from pydp.testing.nodes import Fabric, Host

__all__ = ["Topology", "cleanup_stale", "pid_alive"]

log = logging.getLogger(__name__)

FABRIC_NAME = "fabric"


class _Closable(Protocol):
    def close(self) -> Any: ...


_T = TypeVar("_T", bound=_Closable)
_B = TypeVar("_B", bound=_proc.Background)


class Topology:
    """A set of namespaces for one test, deleted together by `close`.

    Use it as a context manager. ``label`` (``[a-z0-9_]``, optional) is put in
    every namespace name to say which test made it. Not thread-safe: build
    it from one thread.
    """

    def __init__(self, label: str | None = None) -> None:
        self.label = None if label is None else check_label("label", label)
        self.prefix = topology_prefix()
        self._owner = os.getpid()
        self._netns: list[str] = []
        self._names: set[str] = set()
        self._hosts: dict[str, Host] = {}
        self._fabric: Fabric | None = None
        self._background: list[_proc.Background] = []
        self._closers: list[_Closable] = []
        self._closed = False
        _register(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._netns)} namespaces"
        return f"<Topology {self.prefix} {state}>"

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once `close` has run."""
        return self._closed

    @property
    def namespaces(self) -> list[str]:
        """Names of the namespaces this topology created, in creation order."""
        return list(self._netns)

    @property
    def hosts(self) -> Mapping[str, Host]:
        """The hosts added so far, by name."""
        return dict(self._hosts)

    @property
    def fabric(self) -> Fabric:
        """The fabric namespace and its bridge, created on first use."""
        if self._fabric is None:
            fabric = Fabric(self, FABRIC_NAME, self._create_netns(FABRIC_NAME))
            fabric._setup()
            self._fabric = fabric
        return self._fabric

    def add_host(self, name: str) -> Host:
        """Create a host namespace with ``lo`` up and IPv4/IPv6 forwarding on."""
        host = Host(self, name, self._create_netns(name))
        host._setup()
        self._hosts[name] = host
        return host

    def close(self) -> None:
        """Stop background processes and delete every namespace this topology made.

        Idempotent. Tries every step even when one fails, then raises
        `TopologyError` naming what could not be removed.
        """
        if self._closed:
            return
        self._closed = True
        _unregister(self)
        errors: list[str] = []
        for bg in reversed(self._background):
            try:
                bg.stop()
            except (OSError, TopologyError) as exc:
                errors.append(f"stop {bg.cmd[0]} (pid {bg.pid}): {exc}")
        for closer in reversed(self._closers):
            try:
                closer.close()
            except Exception as exc:  # a third-party close() may raise anything
                errors.append(f"close {closer!r}: {exc}")
        for netns in reversed(self._netns):
            try:
                _delete_netns(netns)
            except TopologyError as exc:
                errors.append(str(exc))
        if errors:
            raise TopologyError(f"close topology {self.prefix}: " + "; ".join(errors))

    def _create_netns(self, name: str) -> str:
        if self._closed:
            raise TopologyError(f"add {name} to topology {self.prefix}: topology is closed")
        netns = netns_name(self.prefix, name, self.label)
        if name in self._names:
            raise TopologyError(f"add {name} to topology {self.prefix}: name already used")
        _proc.run(["ip", "netns", "add", netns])
        self._names.add(name)
        self._netns.append(netns)
        log.info("create netns %s", netns)
        _proc.run(["ip", "-n", netns, "link", "set", "lo", "up"])
        return netns

    def _track(self, bg: _B) -> _B:
        if self._closed:
            bg.stop()
            raise TopologyError(f"start {bg.cmd[0]} in {bg.netns}: topology is closed")
        self._background.append(bg)
        return bg

    def _track_closer(self, obj: _T) -> _T:
        self._closers.append(obj)
        return obj


def _delete_netns(netns: str) -> None:
    if not os.path.exists(os.path.join(_proc.NETNS_RUN_DIR, netns)):
        return
    killed = _proc.kill_netns_pids(netns)
    if killed:
        log.info("kill %d processes left in netns %s", len(killed), netns)
    result = _proc.run(["ip", "netns", "delete", netns], check=False)
    if result.returncode != 0 and os.path.exists(os.path.join(_proc.NETNS_RUN_DIR, netns)):
        raise TopologyError(f"delete netns {netns}: {result.stderr.strip()}")
    log.info("delete netns %s", netns)


def pid_alive(pid: int) -> bool:
    """True while a process has pid (a run that left names behind may still own them)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete namespaces of ours (``pd<pid>t<n>...``) whose pid no longer runs.

    Kills processes left inside them first. Namespaces of live processes
    and names of any other shape are left alone. Returns the names removed.
    """
    try:
        names = sorted(os.listdir(_proc.NETNS_RUN_DIR))
    except FileNotFoundError:
        return []
    removed = []
    for netns in names:
        pid = netns_pid(netns)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        _delete_netns(netns)
        log.info("remove stale netns %s of dead pid %d", netns, pid)
        removed.append(netns)
    return removed


# Interpreter exit and SIGTERM close whatever topologies are still open.

_lock = threading.Lock()
_live: dict[int, Topology] = {}
_atexit_installed = False
_sigterm_installed = False
_previous_sigterm: Any = signal.SIG_DFL


def _register(topo: Topology) -> None:
    global _atexit_installed
    with _lock:
        _live[id(topo)] = topo
        install_atexit, _atexit_installed = not _atexit_installed, True
    if install_atexit:
        atexit.register(_close_all)
    _install_sigterm()


def _unregister(topo: Topology) -> None:
    with _lock:
        _live.pop(id(topo), None)


def _close_all() -> None:
    with _lock:
        topologies = [t for t in _live.values() if t._owner == os.getpid()]
    for topo in topologies:
        try:
            topo.close()
        except TopologyError as exc:
            log.error("%s", exc)


def _install_sigterm() -> None:
    """Chain a SIGTERM handler once, from the main thread, unless SIGTERM is ignored."""
    global _previous_sigterm, _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_installed = True
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_IGN, None):
        return
    _previous_sigterm = previous
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _close_all()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), signal.SIGTERM)

"""Processes and threads inside network namespaces: commands, servers, setns."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import IO

from pydp.errors import PydpError
from pydp.net.netns import entered, open_netns
from pydp.testing.errors import CommandError, TopologyError

log = logging.getLogger(__name__)

NETNS_RUN_DIR = "/run/netns"
_STOP_GRACE = 3.0


def run(
    cmd: Sequence[str],
    *,
    netns: str | None = None,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
    own_sysfs: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (in ``netns`` if given) and return its result, text mode."""
    argv = exec_argv(cmd, netns, own_sysfs)
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(cmd, None, "", f"timed out after {timeout}s", netns) from exc
    except OSError as exc:
        raise CommandError(cmd, None, "", exc.strerror or str(exc), netns) from exc
    if check and result.returncode != 0:
        raise CommandError(cmd, result.returncode, result.stdout, result.stderr, netns)
    return result


def exec_argv(cmd: Sequence[str], netns: str | None, own_sysfs: bool = True) -> list[str]:
    """Return the argv that runs ``cmd`` in ``netns`` (or as is when None).

    With ``own_sysfs`` (the default) it is ``ip netns exec``, which also mounts the
    namespace's own /sys in a private mount namespace, as a container sees it; that
    hides /sys/fs/bpf, so a process that must pin BPF objects for others to find (a
    pydp host) runs with ``own_sysfs=False``: ``nsenter --net``, the mounts untouched.
    """
    if isinstance(cmd, str):
        raise TypeError(f"cmd: expected a list of arguments, got the string {cmd!r}")
    if netns is None:
        return list(cmd)
    if not own_sysfs:
        return ["nsenter", f"--net={NETNS_RUN_DIR}/{netns}", *cmd]
    return ["ip", "netns", "exec", netns, *cmd]


class Background:
    """A process started in a namespace, in its own process group.

    `stop` signals the whole group and reaps the leader; it is idempotent.
    Output (stdout and stderr together) goes to a temporary file read by
    `output`.
    """

    __slots__ = ("_out", "_proc", "cmd", "netns")

    def __init__(
        self,
        cmd: Sequence[str],
        netns: str,
        env: dict[str, str] | None = None,
        own_sysfs: bool = True,
    ) -> None:
        self.cmd: list[str] = list(cmd)
        self.netns = netns
        # The file lives as long as this object; stop() closes it.
        self._out: IO[bytes] = tempfile.TemporaryFile(prefix="pydp-bg-")  # noqa: SIM115
        argv = exec_argv(cmd, netns, own_sysfs)
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            self._out.close()
            raise CommandError(cmd, None, "", exc.strerror or str(exc), netns) from exc
        log.info("start %s in %s (pid %d)", shlex.join(self.cmd), netns, self._proc.pid)

    def __repr__(self) -> str:
        return f"<Background pid={self.pid} netns={self.netns} cmd={shlex.join(self.cmd)!r}>"

    @property
    def pid(self) -> int:
        """The pid of the process (also its process group id)."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs."""
        return self._proc.poll()

    def output(self) -> str:
        """Return everything the process wrote so far (stdout and stderr)."""
        if self._out.closed:
            return ""
        self._out.flush()
        return os.pread(self._out.fileno(), 1 << 20, 0).decode(errors="replace")

    def wait_port(self, port: int, proto: str = "tcp", timeout: float = 5) -> None:
        """Wait until something listens on ``port`` in the namespace.

        Polls ``ss`` inside the namespace. Raises `TopologyError` if the
        process exits first or nothing listens within ``timeout`` seconds.
        """
        flags = {"tcp": "-Hltn", "udp": "-Hlun"}.get(proto)
        if flags is None:
            raise ValueError(f"proto: expected tcp or udp, got {proto!r}")
        deadline = time.monotonic() + timeout
        while True:
            ss = run(["ss", flags, "sport", "=", f":{port}"], netns=self.netns, timeout=timeout)
            if ss.stdout.strip():
                return
            if self.returncode is not None:
                raise TopologyError(
                    f"wait for {proto} port {port} in {self.netns}: {shlex.join(self.cmd)} "
                    f"exited with {self.returncode}: {self.output().strip()}"
                )
            if time.monotonic() >= deadline:
                raise TopologyError(
                    f"wait for {proto} port {port} in {self.netns}: "
                    f"nothing listening after {timeout}s"
                )
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own and return its status; raises
        `TopologyError` (leaving it running, for `stop`) after ``timeout`` seconds."""
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TopologyError(
                f"wait for {shlex.join(self.cmd)} in {self.netns}: still running after "
                f"{timeout}s: {self.output().strip()}"
            ) from None

    def stop(self, timeout: float = _STOP_GRACE) -> int:
        """Stop the process group (SIGTERM, then SIGKILL) and return the exit status."""
        if self._proc.returncode is None:
            _killpg(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("stop %s in %s: no exit after SIGTERM", self.cmd[0], self.netns)
        _killpg(self.pid, signal.SIGKILL)  # stragglers left in the group
        status = self._proc.wait()
        if not self._out.closed:
            self._out.close()
        return status


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_netns_pids(netns: str) -> list[int]:
    """SIGKILL every process whose network namespace is ``netns``; return their pids."""
    result = run(["ip", "netns", "pids", netns], check=False, timeout=10)
    pids = [int(word) for word in result.stdout.split() if word.isdigit()]
    pids = [pid for pid in pids if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


@contextlib.contextmanager
def enter_netns(netns: str) -> Iterator[None]:
    """Move the calling thread into ``netns`` and back to where it was on exit."""
    try:
        fd = open_netns(netns)
    except PydpError as exc:
        raise TopologyError(str(exc)) from exc
    try:
        with entered(fd):
            yield
    finally:
        os.close(fd)

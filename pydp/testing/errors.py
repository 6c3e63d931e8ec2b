"""Errors raised by `pydp.testing`."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

__all__ = ["CommandError", "TopologyError"]


class TopologyError(Exception):
    """Building, using or tearing down a test topology failed."""


class CommandError(TopologyError):
    """A command run for a topology failed (non-zero exit, timeout or exec failure).

    ``returncode`` is None when the command timed out or could not be started.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        netns: str | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.netns = netns
        where = f" in {netns}" if netns else ""
        status = f"exit status {returncode}" if returncode is not None else "failed"
        detail = stderr.strip() or stdout.strip()
        super().__init__(f"run {shlex.join(self.cmd)}{where}: {status}: {detail}")

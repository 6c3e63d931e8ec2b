"""The one error hierarchy of pydp: every failure the library raises is one of these."""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "AttachError",
    "ConfigError",
    "ConflictError",
    "DatapathError",
    "MapFullError",
    "NotFoundError",
    "PydpError",
    "VerifierError",
]


class PydpError(Exception):
    """Base of every pydp error; ``errno`` is the kernel's where there is one."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    @classmethod
    def from_errno(cls, operation: str, err: int) -> PydpError:
        """``operation: <the kernel's words>`` with a hint when privileges are the cause."""
        words = os.strerror(err)
        if err in (_errno.EPERM, _errno.EACCES):
            words += " (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        return cls(f"{operation}: {words}", err)


class ConfigError(PydpError):
    """Bad input: a flag, an option or a value that is not accepted."""


class NotFoundError(PydpError):
    """The named object does not exist."""


class ConflictError(PydpError):
    """The object exists already, or is in use by something else."""


class DatapathError(PydpError):
    """The kernel refused or failed an operation on programs, maps or links."""


class VerifierError(DatapathError):
    """The verifier rejected a program; ``log`` holds the tail of its log."""

    def __init__(self, message: str, program: str, log: str, errno: int | None = None) -> None:
        super().__init__(message, errno)
        self.program = program
        self.log = log


class AttachError(DatapathError):
    """A program could not be attached to, or detached from, a hook."""


class MapFullError(DatapathError):
    """A map has no room for another entry."""

"""The store interface: keys, revisions, prefix lists, watch, compare-and-swap, transactions.

The semantics are etcd v3's, so that an etcd store can implement the same interface:

- One store-wide revision counts changes; it is 0 in a new store. Every write (a put, a
  delete of an existing key, or a whole transaction) creates exactly one new revision.
- An entry carries ``revision`` (etcd's mod_revision: the store revision of the key's last
  change) and ``created`` (etcd's create_revision).
- A prefix is a plain string prefix, as etcd's ``--prefix``: ``/net`` matches
  ``/networks/a``, so callers pass ``/networks/`` to list networks.
- Keys start with ``/``; values are the caller's text (JSON).
"""

from __future__ import annotations

import builtins
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from pydp.errors import ConfigError, ConflictError, NotFoundError

__all__ = [
    "CompactedError",
    "Entry",
    "Event",
    "Store",
    "Txn",
    "check_expect",
    "check_key",
    "check_value",
]


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's current value and revisions."""

    key: str
    value: str
    revision: int  # store revision of the key's last change (etcd mod_revision)
    created: int  # store revision at which the key was created (etcd create_revision)


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by a watch; ``value`` is None for a delete."""

    kind: Literal["put", "delete"]
    key: str
    value: str | None
    revision: int


class CompactedError(NotFoundError):
    """A watch asked for history that compaction has dropped (etcd's ErrCompacted).

    ``compacted`` is the newest dropped revision: a watch must start at or after it. The
    caller lists again (``Store.snapshot``) and watches from the revision of that list.
    """

    def __init__(self, message: str, compacted: int) -> None:
        super().__init__(message)
        self.compacted = compacted


class Txn(Protocol):
    """Reads and writes inside one transaction; reads see the transaction's own writes."""

    def get(self, key: str) -> Entry | None: ...

    def list(self, prefix: str) -> list[Entry]:
        """Entries whose key starts with ``prefix``, sorted by key."""
        ...

    def put(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> bool:
        """Delete ``key``; False if it was absent."""
        ...


class Store(ABC):
    """Desired state: JSON text under string keys, with etcd's revisions and watch."""

    @abstractmethod
    def revision(self) -> int:
        """The current store revision (0 in a new store)."""

    @abstractmethod
    def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or None."""

    @abstractmethod
    def list(self, prefix: str) -> list[Entry]:
        """Entries whose key starts with ``prefix`` (a plain string prefix), sorted by key."""

    @abstractmethod
    def snapshot(self, prefix: str) -> tuple[int, builtins.list[Entry]]:
        """``list(prefix)`` and the store revision it was read at, read together: the
        start of list-then-watch (``watch(prefix, since=revision)`` misses nothing)."""

    @abstractmethod
    def put(self, key: str, value: str, expect: int | None = None) -> int:
        """Write ``value`` at ``key`` and return the new store revision.

        ``expect`` None writes unconditionally; 0 requires the key to be absent; N requires
        the key's revision to be N. Otherwise ConflictError, e.g.
        ``put /networks/x: revision is 7, expected 5``.
        """

    @abstractmethod
    def delete(self, key: str, expect: int | None = None) -> bool:
        """Delete ``key``; False if it was absent (and no revision is created).

        ``expect`` as for ``put``; with expect=N an absent key is a conflict.
        """

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Txn]:
        """All-or-nothing reads and writes: an exception inside rolls everything back.

        Every write inside gets the same new revision, as in etcd; a transaction that writes
        nothing creates no revision. Reads see one consistent state and the transaction's
        own writes. Store methods must not be called inside (use the Txn).
        """

    @abstractmethod
    def watch(
        self,
        prefix: str,
        since: int,
        timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Every change under ``prefix`` with revision > ``since``, in revision order (and key
        order within one revision), then new ones as they happen.

        The iterator ends after ``timeout`` seconds without a new event, or when ``stop`` is
        set. Raises CompactedError, at the call or during iteration, when history after
        ``since`` has been compacted: the caller must list again.
        """

    @abstractmethod
    def compact(self, revision: int) -> None:
        """Drop the history of revisions up to ``revision`` (etcd's Compact)."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; further use is an error."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_key(key: object, what: str = "key") -> str:
    """``key`` if it is a string starting with "/", else ConfigError."""
    if not isinstance(key, str) or not key.startswith("/") or "\x00" in key:
        raise ConfigError(f'{what} {key!r}: expected a string starting with "/"')
    try:
        key.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"{what} {key!r}: not valid unicode") from None
    return key


def check_value(key: str, value: object) -> str:
    """``value`` if it is text that can be stored, else ConfigError."""
    if not isinstance(value, str):
        raise ConfigError(f"put {key}: value must be str, got {type(value).__name__}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"put {key}: value is not valid unicode") from None
    return value


def check_expect(op: str, key: str, entry: Entry | None, expect: int | None) -> None:
    """Compare-and-swap: raise ConflictError unless ``entry`` is what ``expect`` asks for."""
    if expect is None:
        return
    if isinstance(expect, bool) or not isinstance(expect, int) or expect < 0:
        raise ConfigError(f"{op} {key}: expect must be a revision >= 0, got {expect!r}")
    if entry is None:
        if expect != 0:
            raise ConflictError(f"{op} {key}: key is absent, expected revision {expect}")
    elif expect == 0:
        raise ConflictError(f"{op} {key}: key exists at revision {entry.revision}, expected absent")
    elif entry.revision != expect:
        raise ConflictError(f"{op} {key}: revision is {entry.revision}, expected {expect}")

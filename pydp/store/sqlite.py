"""The one-host store: a SQLite file in WAL mode, shared by every pydp process on the host.

Each change is one ``BEGIN IMMEDIATE`` transaction, so read-modify-write is serialized
across processes and a writer waits (``busy_timeout``) instead of failing. A killed
process leaves the file as it was before its transaction. A watch polls the store
revision, one indexed read, every ``poll_interval`` seconds.
"""

from __future__ import annotations

import builtins
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from pydp.errors import ConfigError, ConflictError, PydpError

from . import _schema
from .base import CompactedError, Entry, Event, Store, Txn, check_expect, check_key, check_value

__all__ = ["DEFAULT_STATE_DIR", "HISTORY", "SQLiteStore", "open_store"]

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/pydp")
HISTORY = 10_000  # revisions of history kept for watch
BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's transaction
POLL_INTERVAL = 0.02  # seconds between a watch's polls of the store revision
_WATCH_BATCH = 1000  # revisions read by a watch at a time

_COLUMNS = "key, value, revision, created"


def _prefix_range(prefix: str) -> tuple[str, str | None]:
    """[low, high) covering every key that starts with ``prefix`` (high None: unbounded)."""
    nxt = ord(prefix[-1]) + 1
    if nxt > 0x10FFFF:
        return prefix, None
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates are not text; UTF-8 order skips them
        nxt = 0xE000
    return prefix, prefix[:-1] + chr(nxt)


def _where_prefix(prefix: str) -> tuple[str, tuple[str | int, ...]]:
    low, high = _prefix_range(prefix)
    if high is None:
        return "key >= ? AND substr(key, 1, ?) = ?", (low, len(prefix), prefix)
    return "key >= ? AND key < ?", (low, high)


def _select(conn: sqlite3.Connection, prefix: str) -> list[Entry]:
    where, args = _where_prefix(prefix)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM kv WHERE {where} ORDER BY key", args)
    return [Entry(*row) for row in rows]


def _meta(conn: sqlite3.Connection, name: str) -> int:
    value: int = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]
    return value


class _Txn:
    """The Txn of one SQLite write transaction; every write gets ``revision``."""

    def __init__(self, conn: sqlite3.Connection, revision: int) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.revision = revision

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConfigError("transaction: used after it ended")
        return self._conn

    def end(self) -> None:
        self._conn = None

    def get(self, key: str) -> Entry | None:
        check_key(key)
        row = self._db().execute(f"SELECT {_COLUMNS} FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else Entry(*row)

    def list(self, prefix: str) -> list[Entry]:
        return _select(self._db(), check_key(prefix, "prefix"))

    def put(self, key: str, value: str) -> None:
        conn, value = self._db(), check_value(check_key(key), value)
        row = conn.execute("SELECT created FROM kv WHERE key = ?", (key,)).fetchone()
        created = self.revision if row is None else row[0]
        conn.execute(
            "INSERT OR REPLACE INTO kv (key, value, revision, created) VALUES (?, ?, ?, ?)",
            (key, value, self.revision, created),
        )
        conn.execute(
            "INSERT OR REPLACE INTO history (revision, key, kind, value) VALUES (?, ?, 'put', ?)",
            (self.revision, key, value),
        )

    def delete(self, key: str) -> bool:
        conn = self._db()
        row = conn.execute("SELECT created FROM kv WHERE key = ?", (check_key(key),)).fetchone()
        if row is None:
            return False
        conn.execute("DELETE FROM kv WHERE key = ?", (key,))
        if row[0] == self.revision:  # created in this transaction: as if it never was
            conn.execute("DELETE FROM history WHERE revision = ? AND key = ?", (self.revision, key))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO history (revision, key, kind, value) "
                "VALUES (?, ?, 'delete', NULL)",
                (self.revision, key),
            )
        return True


class SQLiteStore(Store):
    """A Store in one SQLite file; safe to share between threads and between processes."""

    def __init__(
        self,
        path: Path,
        *,
        history: int = HISTORY,
        busy_timeout: float = BUSY_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        if history < 1:
            raise ConfigError(f"open store {path}: history must be >= 1, got {history}")
        self.path = Path(path)
        self._history = history
        self._busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = self._connect()
        log.debug("store %s: open at revision %d", self.path, self.revision())

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return self._try_connect()
            except sqlite3.OperationalError as e:
                # Several processes creating the file at once: switching to WAL does not wait
                # for the lock by itself, so retry until busy_timeout.
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise self._failed("open", e) from None
                time.sleep(0.01)
            except sqlite3.Error as e:
                raise self._failed("open", e) from None

    def _try_connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # a reported write survives power loss
            if conn.execute("PRAGMA user_version").fetchone()[0] != _schema.SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")  # only then: opening waits for no writer
                _schema.migrate(conn, self.path)
                conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConfigError(f"store {self.path}: closed")
        return self._conn

    def _failed(self, op: str, e: sqlite3.Error) -> PydpError:
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            return ConflictError(
                f"{op}: store {self.path} is locked by another process "
                f"for more than {self._busy_timeout:g} s"
            )
        if op == "open":
            return ConfigError(f"open store {self.path}: {e}")
        return PydpError(f"{op}: store {self.path}: {e}")

    def revision(self) -> int:
        with self._lock:
            return _meta(self._db(), "revision")

    def get(self, key: str) -> Entry | None:
        check_key(key)
        with self._lock:
            row = self._db().execute(f"SELECT {_COLUMNS} FROM kv WHERE key = ?", (key,))
            found = row.fetchone()
        return None if found is None else Entry(*found)

    def list(self, prefix: str) -> list[Entry]:
        check_key(prefix, "prefix")
        with self._lock:
            return _select(self._db(), prefix)

    def snapshot(self, prefix: str) -> tuple[int, builtins.list[Entry]]:
        check_key(prefix, "prefix")
        with self._lock, self._reading("list " + prefix) as conn:
            return _meta(conn, "revision"), _select(conn, prefix)

    @contextmanager
    def _reading(self, op: str) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot of the file (WAL readers never wait)."""
        conn = self._db()
        if conn.in_transaction:  # inside this store's own transaction: already consistent
            yield conn
            return
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as e:
            raise self._failed(op, e) from None
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def put(self, key: str, value: str, expect: int | None = None) -> int:
        check_value(check_key(key), value)
        with self._transaction(f"put {key}") as txn:
            check_expect("put", key, txn.get(key), expect)
            txn.put(key, value)
        return txn.revision

    def delete(self, key: str, expect: int | None = None) -> bool:
        check_key(key)
        with self._transaction(f"delete {key}") as txn:
            check_expect("delete", key, txn.get(key), expect)
            return txn.delete(key)

    def transaction(self) -> AbstractContextManager[Txn]:
        return self._transaction("transaction")

    @contextmanager
    def _transaction(self, op: str) -> Iterator[_Txn]:
        with self._lock:
            conn = self._db()
            if conn.in_transaction:
                raise ConfigError(f"{op}: the store is inside a transaction; use the Txn")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._failed(op, e) from None
            txn = _Txn(conn, _meta(conn, "revision") + 1)
            try:
                yield txn
                self._commit(conn, txn.revision)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                txn.end()

    def _commit(self, conn: sqlite3.Connection, revision: int) -> None:
        """Publish ``revision`` if the transaction changed anything, compact, commit."""
        changed = conn.execute("SELECT 1 FROM history WHERE revision = ? LIMIT 1", (revision,))
        if changed.fetchone() is not None:
            conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            slack = max(1, self._history // 10)  # compact every `slack` revisions, not each
            if revision - _meta(conn, "compacted") > self._history + slack:
                self._compact(conn, revision - self._history)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._failed("commit", e) from None
        log.debug("store %s: committed revision %d", self.path, revision)

    def _compact(self, conn: sqlite3.Connection, revision: int) -> None:
        conn.execute("DELETE FROM history WHERE revision <= ?", (revision,))
        conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (revision,))
        log.debug("store %s: compacted history up to revision %d", self.path, revision)

    def compact(self, revision: int) -> None:
        with self._transaction(f"compact {revision}") as txn:
            current = txn.revision - 1
            if not 0 <= revision <= current:
                raise ConfigError(f"compact {revision}: expected a revision in 0..{current}")
            if revision > _meta(self._db(), "compacted"):
                self._compact(self._db(), revision)

    def watch(
        self,
        prefix: str,
        since: int,
        timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Event]:
        check_key(prefix, "prefix")
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ConfigError(f"watch {prefix}: since must be a revision >= 0, got {since!r}")
        self._events(prefix, since, since)  # a compacted `since` fails now, not at first next()
        return self._watch(prefix, since, timeout, stop)

    def _watch(
        self, prefix: str, since: int, timeout: float | None, stop: threading.Event | None
    ) -> Iterator[Event]:
        last = since
        deadline = None if timeout is None else time.monotonic() + timeout
        while stop is None or not stop.is_set():
            upto, events = self._events(prefix, last, last + _WATCH_BATCH)
            for event in events:
                if stop is not None and stop.is_set():
                    return
                yield event
            last = upto
            if events and timeout is not None:  # the timeout counts from the last event
                deadline = time.monotonic() + timeout
            if not events and not self._wait(last, deadline, stop):
                return

    def _events(self, prefix: str, after: int, upto: int) -> tuple[int, builtins.list[Event]]:
        """Events under ``prefix`` with ``after`` < revision <= min(upto, store revision)."""
        where, args = _where_prefix(prefix)
        with self._lock, self._reading(f"watch {prefix}") as conn:
            compacted = _meta(conn, "compacted")
            if after < compacted:
                raise CompactedError(
                    f"watch {prefix} since revision {after}: history up to revision "
                    f"{compacted} is compacted; list again and watch from that list's revision",
                    compacted,
                )
            upto = min(upto, _meta(conn, "revision"))
            rows = conn.execute(
                "SELECT kind, key, value, revision FROM history "
                f"WHERE revision > ? AND revision <= ? AND {where} ORDER BY revision, key",
                (after, upto, *args),
            )
            return upto, [Event(*row) for row in rows]

    def _wait(self, last: int, deadline: float | None, stop: threading.Event | None) -> bool:
        """Poll until the store revision passes ``last``: False at ``deadline`` or on stop."""
        while self.revision() <= last:
            pause = self._poll_interval
            if deadline is not None:
                pause = min(pause, deadline - time.monotonic())
                if pause <= 0:
                    return False
            if stop is None:
                time.sleep(pause)
            elif stop.wait(pause):
                return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_store(state_dir: Path | None = None) -> Store:
    """The host's store: ``<state_dir>/state.db``; the state directory is ``state_dir``, else
    ``$PYDP_STATE_DIR``, else /var/lib/pydp, created with mode 0700 if missing."""
    directory = state_dir or Path(os.environ.get("PYDP_STATE_DIR") or DEFAULT_STATE_DIR)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"create state directory {directory}: {e.strerror}", e.errno) from None
    return SQLiteStore(directory / "state.db")

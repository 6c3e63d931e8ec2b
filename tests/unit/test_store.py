"""pydp.store: keys, revisions, compare-and-swap, transactions, watch, schema, in one process.

The tests taking the ``store`` fixture are the Store conformance suite: each runs against
the SQLite store and against an etcd store (a real etcd shared by the module, a key prefix
of its own per test). They state the common contract: revisions are counted from the
store's revision when the test starts, since a new etcd store is at its cluster's
revision where a new SQLite store is at 0 (tests of that are per store below).
"""

from __future__ import annotations

import importlib
import itertools
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import pydp.store._schema as schema
from pydp.errors import ConfigError, ConflictError
from pydp.store import (
    CompactedError,
    Entry,
    EtcdStore,
    Event,
    SQLiteStore,
    Store,
    Txn,
    open_store,
    run_transaction,
)

_prefixes = itertools.count()


def isort_key(name: str) -> tuple[int, str]:
    """ruff's __all__ order (RUF022): CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@dataclass
class Backend:
    """One store kind under test: ``open()`` gives another store object on the same data."""

    kind: str
    factory: Callable[[], Store]
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = self.factory()
        self.opened.append(store)
        return store


def unique_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix in etcd of this test alone: its name and a counter."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)
    return f"/test/{name}-{next(_prefixes)}"


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Function scope: the SQLite store in tmp_path, or an etcd store on the module's etcd
    (``etcd_module``, which skips without etcd) under a key prefix of this test."""
    if request.param == "sqlite":
        backend = Backend("sqlite", lambda: SQLiteStore(tmp_path / "state.db"))
    else:
        url = request.getfixturevalue("etcd_module").url(unique_prefix(request))
        backend = Backend("etcd", lambda: EtcdStore(url))
    try:
        yield backend
    finally:
        for store in backend.opened:
            store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def store_name(store: Store) -> str:
    """What a store's messages call it: the SQLite file, or the etcd URL."""
    return str(store.path) if isinstance(store, SQLiteStore) else store.name  # type: ignore[attr-defined]


def test_store_all_is_sorted_and_complete() -> None:
    """pydp.store re-exports its API with a sorted __all__ naming real attributes."""
    mod = importlib.import_module("pydp.store")
    assert list(mod.__all__) == sorted(mod.__all__, key=isort_key)
    assert all(hasattr(mod, name) for name in mod.__all__)


def test_store_put_get_delete(store: Store) -> None:
    """A put is read back with its revisions, and a delete removes it once."""
    r0 = store.revision()
    assert store.get("/networks/a") is None
    assert store.put("/networks/a", '{"x": 1}') == r0 + 1
    assert store.get("/networks/a") == Entry("/networks/a", '{"x": 1}', r0 + 1, r0 + 1)
    assert store.delete("/networks/a") is True
    assert store.get("/networks/a") is None
    assert store.delete("/networks/a") is False


def test_store_new_sqlite_store_is_at_revision_0(tmp_path: Path) -> None:
    """A new SQLite store is at revision 0, and its first write makes revision 1."""
    store = SQLiteStore(tmp_path / "s.db")
    assert store.revision() == 0
    assert store.put("/a", "1") == 1


def test_store_revisions_and_created(store: Store) -> None:
    """Each write makes one store revision; created stays until the key is deleted."""
    r0 = store.revision()
    store.put("/a", "1")
    store.put("/b", "1")
    assert store.put("/a", "2") == r0 + 3
    assert store.get("/a") == Entry("/a", "2", r0 + 3, r0 + 1)
    assert store.delete("/a") is True and store.revision() == r0 + 4
    assert store.delete("/a") is False and store.revision() == r0 + 4  # no change, no revision
    assert store.put("/a", "3") == r0 + 5
    assert store.get("/a") == Entry("/a", "3", r0 + 5, r0 + 5)


def test_store_list_is_a_plain_prefix_sorted_by_key(store: Store) -> None:
    """A prefix is a plain string prefix, as in etcd: "/net" matches "/networks/..."."""
    for key in ["/networks/b", "/net/x", "/networksX", "/networks/a", "/endpoints/a"]:
        store.put(key, "{}")
    keys = [e.key for e in store.list("/networks/")]
    assert keys == ["/networks/a", "/networks/b"]
    assert [e.key for e in store.list("/net")] == [
        "/net/x",
        "/networks/a",
        "/networks/b",
        "/networksX",
    ]
    assert len(store.list("/")) == 5


def test_store_list_prefix_ending_in_the_last_code_point(store: Store) -> None:
    """A prefix ending in U+10FFFF, which has no successor, still lists exactly its keys."""
    store.put("/a\U0010ffff", "1")
    store.put("/a\U0010ffff/b", "2")
    store.put("/b", "3")
    assert [e.value for e in store.list("/a\U0010ffff")] == ["1", "2"]


def test_store_snapshot_returns_the_revision_it_read_at(store: Store) -> None:
    """snapshot() gives the entries and the store revision to watch from."""
    r0 = store.revision()
    store.put("/networks/a", "1")
    store.put("/endpoints/a", "2")
    assert store.snapshot("/networks/") == (r0 + 2, [Entry("/networks/a", "1", r0 + 1, r0 + 1)])


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("networks/x", "key 'networks/x': expected a string starting with \"/\""),
        ("", "key '': expected a string starting with \"/\""),
        (7, 'key 7: expected a string starting with "/"'),
        ("/a\x00b", "key '/a\\x00b': expected a string starting with \"/\""),
        ("/\ud800", "key '/\\ud800': not valid unicode"),
    ],
)
def test_store_bad_key_is_config_error(store: Store, key: object, message: str) -> None:
    """Keys that do not start with "/" (or are not text) are refused with ConfigError."""
    with pytest.raises(ConfigError) as e:
        store.put(key, "{}")  # type: ignore[arg-type]
    assert str(e.value) == message
    with pytest.raises(ConfigError):
        store.get(key)  # type: ignore[arg-type]


def test_store_value_must_be_str(store: Store) -> None:
    """A value that is not str is refused with ConfigError naming the key."""
    with pytest.raises(ConfigError) as e:
        store.put("/x", b"{}")  # type: ignore[arg-type]
    assert str(e.value) == "put /x: value must be str, got bytes"


def test_store_cas_succeeds_when_expectation_holds(store: Store) -> None:
    """expect=0 creates an absent key; expect=N updates a key at revision N."""
    r0 = store.revision()
    assert store.put("/networks/x", "1", expect=0) == r0 + 1
    assert store.put("/networks/x", "2", expect=r0 + 1) == r0 + 2
    assert store.delete("/networks/x", expect=r0 + 2) is True
    assert store.delete("/networks/x", expect=0) is False


@pytest.mark.parametrize(
    ("op", "key", "expect", "message"),
    [  # expect: None is 0; else added to the revision of /networks/x, written first
        ("put", "/networks/x", 4, "put /networks/x: revision is {r}, expected {e}"),
        (
            "put",
            "/networks/x",
            None,
            "put /networks/x: key exists at revision {r}, expected absent",
        ),
        ("put", "/networks/y", 2, "put /networks/y: key is absent, expected revision {e}"),
        ("delete", "/networks/x", 1, "delete /networks/x: revision is {r}, expected {e}"),
        (
            "delete",
            "/networks/x",
            None,
            "delete /networks/x: key exists at revision {r}, expected absent",
        ),
        ("delete", "/networks/y", 0, "delete /networks/y: key is absent, expected revision {e}"),
    ],
)
def test_store_cas_conflict_message(
    store: Store, op: str, key: str, expect: int | None, message: str
) -> None:
    """A failed compare-and-swap raises ConflictError with an exact message and changes nothing."""
    r = store.put("/networks/x", "1")
    e_ = 0 if expect is None else r + expect
    with pytest.raises(ConflictError) as e:
        if op == "put":
            store.put(key, "2", expect=e_)
        else:
            store.delete(key, expect=e_)
    assert str(e.value) == message.format(r=r, e=e_)
    assert store.revision() == r and store.get("/networks/x") == Entry("/networks/x", "1", r, r)


def test_store_cas_negative_expect_is_config_error(store: Store) -> None:
    """A negative expected revision is bad input, not a conflict."""
    with pytest.raises(ConfigError) as e:
        store.put("/x", "1", expect=-1)
    assert str(e.value) == "put /x: expect must be a revision >= 0, got -1"


class Boom(RuntimeError):
    """Raised inside a transaction by the tests."""


def test_transaction_exception_rolls_back_everything(store: Store) -> None:
    """An exception inside a transaction undoes all its writes and creates no revision."""
    r = store.put("/a", "1")
    with pytest.raises(Boom), store.transaction() as txn:
        txn.put("/a", "2")
        txn.put("/b", "2")
        assert txn.delete("/a") is True
        raise Boom
    assert store.revision() == r
    assert store.list("/") == [Entry("/a", "1", r, r)]
    assert list(store.watch("/", since=r, timeout=0)) == []


def test_transaction_writes_share_one_revision(store: Store) -> None:
    """Every write of one transaction gets the same new revision, as in etcd."""
    r0 = store.revision()
    store.put("/a", "1")
    store.put("/b", "1")
    with store.transaction() as txn:
        txn.put("/a", "2")
        txn.put("/c", "2")
        txn.delete("/b")
    r = r0 + 3
    assert store.revision() == r
    assert store.list("/") == [Entry("/a", "2", r, r0 + 1), Entry("/c", "2", r, r)]
    assert list(store.watch("/", since=r0 + 2, timeout=0)) == [
        Event("put", "/a", "2", r),
        Event("delete", "/b", None, r),
        Event("put", "/c", "2", r),
    ]


def test_transaction_reads_its_own_writes(store: Store) -> None:
    """Reads inside a transaction see its writes; a key made and removed inside leaves no event."""
    r = store.put("/a", "1")
    with store.transaction() as txn:
        txn.put("/a", "2")
        assert txn.get("/a") == Entry("/a", "2", r + 1, r)
        txn.put("/tmp", "x")
        assert [e.key for e in txn.list("/")] == ["/a", "/tmp"]
        assert txn.delete("/tmp") is True
        assert txn.get("/tmp") is None and [e.key for e in txn.list("/")] == ["/a"]
    assert list(store.watch("/", since=r, timeout=0)) == [Event("put", "/a", "2", r + 1)]


def test_transaction_put_after_delete(backend: Backend) -> None:
    """A key deleted and put again inside one transaction is one put; SQLite creates it anew,
    etcd keeps its created (etcd cannot delete and create one key in one revision)."""
    store = backend.open()
    r = store.put("/a", "1")
    with store.transaction() as txn:
        assert txn.delete("/a") is True
        txn.put("/a", "2")
        created = r + 1 if backend.kind == "sqlite" else r
        assert txn.get("/a") == Entry("/a", "2", r + 1, created)
    assert store.get("/a") == Entry("/a", "2", r + 1, created)
    assert list(store.watch("/", since=r, timeout=0))[-1] == Event("put", "/a", "2", r + 1)


def test_transaction_without_writes_creates_no_revision(store: Store) -> None:
    """A transaction that only reads (or deletes nothing) leaves the revision alone."""
    r = store.put("/a", "1")
    with store.transaction() as txn:
        assert txn.get("/a") is not None
        assert txn.delete("/missing") is False
    assert store.revision() == r


def test_transaction_misuse_is_config_error(store: Store) -> None:
    """Store writes inside a transaction, and a Txn used after it ended, are refused."""
    r0 = store.revision()
    with store.transaction() as txn, pytest.raises(ConfigError) as e:
        store.put("/a", "1")
    assert str(e.value) == "put /a: the store is inside a transaction; use the Txn"
    with pytest.raises(ConfigError) as e:
        txn.put("/a", "1")
    assert str(e.value) == "transaction: used after it ended"
    assert store.revision() == r0


def test_run_transaction_returns_what_the_function_returns(store: Store) -> None:
    """run_transaction commits the function's writes and returns its result."""
    r = store.put("/counter", "1")

    def increment(txn: Txn) -> int:
        entry = txn.get("/counter")
        assert entry is not None
        txn.put("/counter", str(int(entry.value) + 1))
        return int(entry.value) + 1

    assert run_transaction(store, increment) == 2
    assert store.get("/counter") == Entry("/counter", "2", r + 1, r)


def test_watch_replays_history_in_revision_order(store: Store) -> None:
    """A watch yields every change under the prefix after `since`, oldest first."""
    r0 = store.revision()
    store.put("/networks/a", "1")
    store.put("/endpoints/a", "1")
    store.put("/networks/b", "1")
    store.delete("/networks/a")
    assert list(store.watch("/networks/", since=r0 + 1, timeout=0)) == [
        Event("put", "/networks/b", "1", r0 + 3),
        Event("delete", "/networks/a", None, r0 + 4),
    ]


def test_watch_sees_a_put_from_another_store_object(backend: Backend) -> None:
    """A watch on one store object sees a put made through another one on the same data."""
    a, b = backend.open(), backend.open()
    r0 = a.revision()
    events = b.watch("/networks/", since=r0, timeout=2)
    threading.Timer(0.1, a.put, ("/networks/a", "1")).start()
    assert next(events) == Event("put", "/networks/a", "1", r0 + 1)


def test_watch_timeout_ends_the_iterator(store: Store) -> None:
    """With no new event for `timeout` seconds the iterator ends; other prefixes do not count."""
    r0 = store.revision()
    store.put("/networks/a", "1")
    timer = threading.Timer(0.1, store.put, ("/endpoints/a", "1"))
    timer.start()
    start = time.monotonic()
    assert [e.key for e in store.watch("/networks/", since=r0, timeout=0.3)] == ["/networks/a"]
    timer.join()
    assert 0.3 <= time.monotonic() - start < 1.0


def test_watch_stop_ends_the_iterator(store: Store) -> None:
    """Setting `stop` from another thread ends a watch that has no timeout."""
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    start = time.monotonic()
    assert list(store.watch("/", since=store.revision(), stop=stop)) == []
    assert time.monotonic() - start < 1.0


def test_watch_bad_since_is_config_error(store: Store) -> None:
    """A negative `since` is refused when watch is called."""
    with pytest.raises(ConfigError) as e:
        store.watch("/", since=-1)
    assert str(e.value) == "watch /: since must be a revision >= 0, got -1"


def test_watch_compacted_history_says_list_again(tmp_path: Path) -> None:
    """History is kept for the last `history` revisions; a watch before that fails clearly."""
    store = SQLiteStore(tmp_path / "s.db", history=5)
    for i in range(20):
        store.put("/k", str(i))
    with pytest.raises(CompactedError) as e:
        store.watch("/", since=0)
    assert str(e.value) == (
        "watch / since revision 0: history up to revision 14 is compacted; "
        "list again and watch from that list's revision"
    )
    assert e.value.compacted == 14
    assert [e.revision for e in store.watch("/", since=14, timeout=0)] == list(range(15, 21))


def test_watch_compacted_while_iterating(tmp_path: Path) -> None:
    """A watcher that falls behind compaction gets CompactedError instead of a gap."""
    store = SQLiteStore(tmp_path / "s.db", history=5)
    store.put("/k", "0")
    events = store.watch("/", since=0, timeout=0)
    for i in range(20):
        store.put("/k", str(i))
    with pytest.raises(CompactedError):
        next(events)


def test_watch_compacted_before_the_first_event(store: Store) -> None:
    """A watch whose history is compacted after the call raises CompactedError when read."""
    r0 = store.put("/k", "0")
    events = store.watch("/", since=r0, timeout=0)
    for i in range(4):
        store.put("/k", str(i))
    store.compact(r0 + 2)
    with pytest.raises(CompactedError) as e:
        next(events)
    assert e.value.compacted == r0 + 2


def test_store_compact_drops_history_up_to_a_revision(store: Store) -> None:
    """compact(N) drops history up to N, as etcd's Compact, and refuses future revisions."""
    r0 = store.revision()
    for i in range(4):
        store.put("/k", str(i))
    store.compact(r0 + 2)
    assert [e.revision for e in store.watch("/", since=r0 + 2, timeout=0)] == [r0 + 3, r0 + 4]
    with pytest.raises(CompactedError) as e:
        store.watch("/", since=r0 + 1)
    assert str(e.value) == (
        f"watch / since revision {r0 + 1}: history up to revision {r0 + 2} is compacted; "
        "list again and watch from that list's revision"
    )
    assert e.value.compacted == r0 + 2
    store.compact(r0 + 1)  # compacted there already: nothing to do
    with pytest.raises(ConfigError) as e2:
        store.compact(r0 + 9)
    assert str(e2.value) == f"compact {r0 + 9}: expected a revision in 0..{r0 + 4}"


def test_schema_new_db_is_wal_at_current_version(tmp_path: Path) -> None:
    """A new store file is in WAL mode and carries the schema version."""
    SQLiteStore(tmp_path / "s.db").close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_newer_version_is_refused(tmp_path: Path) -> None:
    """A file written by a newer pydp is refused with one line naming it and both versions."""
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 9")
    with pytest.raises(ConfigError) as e:
        SQLiteStore(path)
    assert str(e.value) == (
        f"open store {path}: schema version 9 is newer than this pydp supports (1); upgrade pydp"
    )


def test_schema_older_version_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening an older file runs the migrations after its version and keeps the data."""
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        store.put("/a", "1")
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, "CREATE TABLE extra (x)"))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    with SQLiteStore(path) as store:
        assert store.get("/a") == Entry("/a", "1", 1, 1)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM extra").fetchone()[0] == 0


def test_store_open_not_a_database_is_config_error(tmp_path: Path) -> None:
    """A file that is not SQLite is refused with ConfigError naming it."""
    path = tmp_path / "s.db"
    path.write_bytes(b"not a database, certainly not" * 100)
    with pytest.raises(ConfigError) as e:
        SQLiteStore(path)
    assert str(e.value) == f"open store {path}: file is not a database"


def test_store_open_in_missing_directory_is_config_error(tmp_path: Path) -> None:
    """A store path whose directory does not exist is refused with ConfigError naming it."""
    path = tmp_path / "missing" / "s.db"
    with pytest.raises(ConfigError) as e:
        SQLiteStore(path)
    assert str(e.value) == f"open store {path}: unable to open database file"


def test_store_closed_is_config_error(store: Store) -> None:
    """A closed store refuses further use with ConfigError; close is idempotent."""
    store.close()
    store.close()
    with pytest.raises(ConfigError) as e:
        store.revision()
    assert str(e.value) == f"store {store_name(store)}: closed"


def test_open_store_uses_pydp_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_store() puts state.db in $PYDP_STATE_DIR, created 0700; an argument wins."""
    monkeypatch.delenv("PYDP_STORE", raising=False)
    monkeypatch.setenv("PYDP_STATE_DIR", str(tmp_path / "env"))
    store = open_store()
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "env" / "state.db"
    assert (tmp_path / "env").stat().st_mode & 0o777 == 0o700
    store.put("/a", "1")
    store.close()
    with open_store(tmp_path / "arg") as other:
        assert isinstance(other, SQLiteStore) and other.path == tmp_path / "arg" / "state.db"
        assert other.revision() == 0

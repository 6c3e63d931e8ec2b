"""pydp.store on etcd: URLs, key prefixes, optimistic transactions, watch, leases, TLS.

The Store contract itself is tested against etcd by the conformance suite in
test_store.py; this module covers what is etcd's own. Most tests share one etcd (the
``etcd_module`` fixture), each under a key prefix of its own.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydp.cli import main
from pydp.errors import ConfigError, ConflictError, NotFoundError
from pydp.store import (
    URL_FORM,
    Entry,
    EtcdError,
    EtcdStore,
    EtcdURL,
    Event,
    Leases,
    SQLiteStore,
    Txn,
    TxnConflictError,
    open_store,
    parse_url,
    run_transaction,
)
from pydp.store._etcdclient import Stream, TLSFiles
from pydp.testing.etcd import EtcdServer, etcd_server, make_certs

from .test_store import unique_prefix


@pytest.fixture
def url(etcd_module: EtcdServer, request: pytest.FixtureRequest) -> str:
    """Function scope: a store URL on the module's etcd with a key prefix of this test."""
    return etcd_module.url(unique_prefix(request))


@pytest.fixture
def store(url: str) -> Iterator[EtcdStore]:
    with EtcdStore(url) as store:
        yield store


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# URLs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "parsed", "text"),
    [
        (
            "etcd://127.0.0.1:2379",
            EtcdURL((("127.0.0.1", 2379),), "/pydp"),
            "etcd://127.0.0.1:2379/pydp",
        ),
        (
            "etcd://a:1,b.example:2/x/y/",
            EtcdURL((("a", 1), ("b.example", 2)), "/x/y"),
            "etcd://a:1,b.example:2/x/y",
        ),
        (
            "etcd://[::1]:2380,node",
            EtcdURL((("::1", 2380), ("node", 2379)), "/pydp"),
            "etcd://[::1]:2380,node:2379/pydp",
        ),
        (
            "etcds://h:1/p?cacert=/ca.pem&cert=/c.pem&key=/c.key",
            EtcdURL((("h", 1),), "/p", TLSFiles("/ca.pem", "/c.pem", "/c.key")),
            "etcds://h:1/p",
        ),
        ("etcds://h:1", EtcdURL((("h", 1),), "/pydp", TLSFiles()), "etcds://h:1/pydp"),
    ],
)
def test_etcd_url_parsed(url: str, parsed: EtcdURL, text: str) -> None:
    """Store URLs: several endpoints, a default port and prefix, IPv6, TLS options."""
    assert parse_url(url) == parsed
    assert str(parsed) == text


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://h:1", ""),
        ("etcd:/h:1", ""),
        ("etcd://", ""),
        ("etcd://a:1,,b:2", ""),
        ("etcd://h:x", ""),
        ("etcd://h:0", " (port 0: expected 1-65535)"),
        ("etcd://[::1:2379", ""),
        ("etcd://h:1?cacert=/ca.pem", " (TLS options need etcds://)"),
        ("etcds://h:1?cert=/c.pem", " (cert and key go together)"),
        ("etcds://h:1?ca=/x", " (options: cacert, cert, key, each once, with a value)"),
        ("etcds://h:1?cacert=", " (options: cacert, cert, key, each once, with a value)"),
        (
            "etcds://h:1?cacert=/a&cacert=/b",
            " (options: cacert, cert, key, each once, with a value)",
        ),
    ],
)
def test_etcd_url_bad_is_one_line_naming_the_flag(url: str, why: str) -> None:
    """A bad store URL is a ConfigError naming --store, the accepted form and the URL."""
    with pytest.raises(ConfigError) as e:
        parse_url(url)
    assert str(e.value) == f'--store: expected {URL_FORM}, got "{url}"{why}'
    assert URL_FORM == (
        "etcd://HOST:PORT[,HOST:PORT...][/PREFIX] or "
        "etcds://HOST:PORT[,HOST:PORT...][/PREFIX][?cacert=FILE&cert=FILE&key=FILE]"
    )


def test_open_store_takes_an_etcd_url_or_pydp_store(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_store opens etcd for a URL, or for $PYDP_STORE, and creates a given state dir."""
    with open_store(url) as store:
        assert isinstance(store, EtcdStore) and store.name == str(parse_url(url))
    monkeypatch.setenv("PYDP_STORE", url)
    with open_store(state_dir=tmp_path / "state") as store:
        assert isinstance(store, EtcdStore)
    assert (tmp_path / "state").is_dir() and not (tmp_path / "state" / "state.db").exists()
    monkeypatch.setenv("PYDP_STORE", "")
    with open_store(state_dir=tmp_path / "state") as store:
        assert isinstance(store, SQLiteStore)
    with pytest.raises(ConfigError) as e:
        open_store("/var/lib/pydp")
    assert str(e.value) == f'--store: expected {URL_FORM}, got "/var/lib/pydp"'


def test_etcd_unreachable_is_one_line_naming_the_url() -> None:
    """An etcd that cannot be reached fails the open with one line naming every endpoint."""
    a, b = closed_port(), closed_port()
    with pytest.raises(EtcdError) as e:
        EtcdStore(f"etcd://127.0.0.1:{a},127.0.0.1:{b}/x")
    assert str(e.value) == (
        f"store etcd://127.0.0.1:{a},127.0.0.1:{b}/x: cannot reach etcd "
        f"(127.0.0.1:{a}: Connection refused; 127.0.0.1:{b}: Connection refused)"
    )


def test_etcd_fails_over_to_the_next_endpoint(etcd_module: EtcdServer) -> None:
    """With the first endpoint down, calls go to the next one."""
    with EtcdStore(f"etcd://127.0.0.1:{closed_port()},{etcd_module.endpoint}/failover") as store:
        revision = store.put("/a", "1")
        assert store.get("/a") == Entry("/a", "1", revision, revision)


def test_cli_store_flag_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--store with a bad URL, or an etcd that is down, is one Error: line and exit 1."""
    port = closed_port()
    for store, message in [
        ("http://h:1", f'Error: --store: expected {URL_FORM}, got "http://h:1"'),
        (
            f"etcd://127.0.0.1:{port}",
            f"Error: store etcd://127.0.0.1:{port}/pydp: cannot reach etcd "
            f"(127.0.0.1:{port}: Connection refused)",
        ),
    ]:
        argv = ["--state-dir", str(tmp_path), "--store", store, "network", "ls"]
        assert main(argv) == 1
        assert capsys.readouterr().err == message + "\n"


# revisions and prefixes ------------------------------------------------------------------
def test_etcd_new_store_is_at_its_clusters_revision(etcd: EtcdServer) -> None:
    """An etcd store shows etcd's revision: 1 on a new cluster, moved by every user of it."""
    a, b = EtcdStore(etcd.url("/a")), EtcdStore(etcd.url("/b"))
    assert a.revision() == b.revision() == 1
    assert a.put("/k", "1") == 2
    assert b.revision() == 2 and b.list("/") == []
    assert list(b.watch("/", since=0, timeout=0)) == []
    assert b.put("/k", "1") == 3


def test_etcd_keys_live_under_the_prefix(etcd_module: EtcdServer, url: str) -> None:
    """A store's keys are etcd's PREFIX + key; /pydp by default; other prefixes never see them."""
    store, prefix = EtcdStore(url), parse_url(url).prefix
    root = EtcdStore(EtcdURL(((etcd_module.host, etcd_module.port),), ""))
    parent = EtcdStore(EtcdURL(((etcd_module.host, etcd_module.port),), prefix.rsplit("/", 1)[0]))
    revision = store.put("/networks/a", "1")
    assert root.get(prefix + "/networks/a") == Entry(
        prefix + "/networks/a", "1", revision, revision
    )
    name = prefix.rsplit("/", 1)[1]
    assert [e.key for e in parent.list(f"/{name}/")] == [f"/{name}/networks/a"]
    guard = root.get(prefix + "#guard/networks/")  # the directory guard: beside, not under
    assert guard is not None and guard.revision == revision
    assert EtcdStore(url + "-other").list("/") == []
    default = EtcdStore(etcd_module.url())
    revision = default.put("/k", "v")
    assert default.prefix == "/pydp" and root.get("/pydp/k") == Entry(
        "/pydp/k", "v", revision, revision
    )
    assert default.delete("/k")


# transactions ----------------------------------------------------------------------------
def counter_value(txn: Txn) -> int:
    entry = txn.get("/counter")
    return 0 if entry is None else int(entry.value)


def test_txn_conflict_on_a_key_read(store: EtcdStore, url: str) -> None:
    """A key read, then changed by another writer, makes the commit a TxnConflictError that
    names it; nothing of the transaction is written."""
    other = EtcdStore(url)
    store.put("/a", "1")
    with pytest.raises(TxnConflictError) as e, store.transaction() as txn:
        assert txn.get("/a") is not None
        read_at = txn.read_revision  # type: ignore[attr-defined]
        changed = other.put("/a", "2")
        txn.put("/b", "x")
    assert str(e.value) == (
        f"transaction: /a changed after revision {read_at}, while the transaction ran; "
        "retry the transaction"
    )
    assert isinstance(e.value, ConflictError)
    assert store.get("/b") is None and store.revision() == changed


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s.put("/absent", "now"), "/absent"),  # a key read as absent, created
        (lambda s: s.put("/nets/c", "new"), "/nets/"),  # a key created under a listed prefix
        (lambda s: s.put("/nets/a", "changed"), "/nets/a"),  # a listed key changed
        (lambda s: s.delete("/nets/b"), "/nets/b"),  # a listed key deleted
    ],
)
def test_txn_conflict_on_what_was_listed_or_absent(
    store: EtcdStore, url: str, change: object, named: str
) -> None:
    """Absent keys read and prefixes listed are compared too: creation, change and deletion."""
    other = EtcdStore(url)
    store.put("/nets/a", "1")
    store.put("/nets/b", "1")
    with pytest.raises(TxnConflictError) as e, store.transaction() as txn:
        assert txn.get("/absent") is None
        assert [x.key for x in txn.list("/nets/")] == ["/nets/a", "/nets/b"]
        change(other)  # type: ignore[operator]
        txn.put("/result", "x")
    assert f"transaction: {named} changed after revision" in str(e.value)
    assert store.get("/result") is None


def test_txn_commits_despite_unrelated_and_blind_changes(store: EtcdStore, url: str) -> None:
    """Changes to keys the transaction did not read (or only wrote) do not conflict; a
    read-only transaction never conflicts."""
    other = EtcdStore(url)
    store.put("/a", "1")
    with store.transaction() as txn:
        assert txn.get("/a") is not None
        other.put("/elsewhere", "1")
        other.put("/b", "theirs")
        txn.put("/b", "ours")
    assert store.get("/b").value == "ours"  # type: ignore[union-attr]
    with store.transaction() as txn:
        assert txn.get("/a") is not None
        other.put("/a", "2")
    assert store.get("/a").value == "2"  # type: ignore[union-attr]


def test_txn_past_the_compare_cap_compares_directories(url: str) -> None:
    """A transaction reading more keys than etcd compares in one Txn compares their
    directories' guards instead: it commits, and a write anywhere there is a conflict."""
    store, other = EtcdStore(url, max_txn_ops=4), EtcdStore(url)
    for i in range(6):
        store.put(f"/k/{i}", str(i))
    with store.transaction() as txn:
        total = sum(int(txn.get(f"/k/{i}").value) for i in range(6))  # type: ignore[union-attr]
        txn.put("/sum", str(total))
    assert store.get("/sum").value == "15"  # type: ignore[union-attr]
    with pytest.raises(TxnConflictError) as e, store.transaction() as txn:
        total = sum(int(txn.get(f"/k/{i}").value) for i in range(5))  # type: ignore[union-attr]
        other.put("/k/9", "not read, but in the directory")
        txn.put("/sum", str(total))
    assert "transaction: /k/ changed after revision" in str(e.value)
    assert store.get("/sum").value == "15"  # type: ignore[union-attr]


def test_txn_many_listed_keys_one_deleted_is_a_conflict(store: EtcdStore, url: str) -> None:
    """A listed prefix holding more keys than etcd compares in one Txn still sees a
    deletion of any of them as a conflict (through its directory's guard)."""
    other = EtcdStore(url)
    for start in (0, 100):
        with store.transaction() as txn:
            for i in range(start, start + 100):
                txn.put(f"/eps/{i:03}", "x")
    with pytest.raises(TxnConflictError) as e, store.transaction() as txn:
        assert len(txn.list("/eps/")) == 200
        other.delete("/eps/150")
        txn.put("/eps/200", "x")
    assert "transaction: /eps/150 changed after revision" in str(e.value)
    assert len(store.list("/eps/")) == 199


def test_txn_too_many_writes_is_one_line(url: str) -> None:
    """More writes than etcd takes in one Txn are refused before anything is written."""
    store = EtcdStore(url, max_txn_ops=4)
    with pytest.raises(EtcdError) as e, store.transaction() as txn:
        for i in range(4):
            txn.put(f"/k/{i}", "x")
    assert str(e.value) == (
        f"store {store.name}: transaction: 4 writes (and their 1 directory guards) are more "
        "than etcd takes in one transaction (--max-txn-ops 4)"
    )
    assert store.list("/") == []


def test_run_transaction_runs_again_on_conflict(store: EtcdStore, url: str) -> None:
    """run_transaction runs the function again after a conflict and commits the second run;
    past its attempts it raises the last conflict."""
    other = EtcdStore(url)
    runs = []

    def increment(txn: Txn) -> int:
        value = counter_value(txn)
        runs.append(value)
        if len(runs) == 1:
            other.put("/counter", "10")  # someone else, between our read and our commit
        txn.put("/counter", str(value + 1))
        return value + 1

    assert run_transaction(store, increment) == 11
    assert runs == [0, 10] and store.get("/counter").value == "11"  # type: ignore[union-attr]

    def always_late(txn: Txn) -> None:
        value = counter_value(txn)
        runs.append(value)
        other.put("/counter", str(value + 100))
        txn.put("/counter", "never")

    runs.clear()
    with pytest.raises(TxnConflictError):
        run_transaction(store, always_late, attempts=3)
    assert len(runs) == 3 and store.get("/counter").value == "311"  # type: ignore[union-attr]


INCREMENT = """
import sys
from pydp.errors import ConflictError
from pydp.store import EtcdStore, run_transaction
store = EtcdStore(sys.argv[1])
def increment(txn):
    entry = txn.get("/counter")
    txn.put("/counter", str(int(entry.value) + 1 if entry else 1))
for _ in range(int(sys.argv[3])):
    if sys.argv[2] == "txn":
        run_transaction(store, increment, attempts=1000)
        continue
    while True:
        entry = store.get("/counter")
        try:
            store.put("/counter", str(int(entry.value) + 1 if entry else 1),
                      expect=entry.revision if entry else 0)
            break
        except ConflictError:
            pass
"""


@pytest.mark.parametrize("mode", ["txn", "cas"])
def test_etcd_concurrent_writers_lose_no_update(url: str, mode: str) -> None:
    """Two processes incrementing one counter (transactions retried, or CAS) lose nothing."""
    n = 60
    procs = [
        subprocess.Popen([sys.executable, "-c", INCREMENT, url, mode, str(n)]) for _ in range(2)
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    counter = EtcdStore(url).get("/counter")
    assert counter is not None and counter.value == str(2 * n)


# watch ----------------------------------------------------------------------------------
def test_etcd_two_hosts_see_each_others_writes(url: str) -> None:
    """Two store objects on one etcd (two hosts) each see the other's writes by watch."""
    a, b = EtcdStore(url), EtcdStore(url)
    since = a.revision()
    seen_by_a = a.watch("/networks/", since=since, timeout=3)
    seen_by_b = b.watch("/networks/", since=since, timeout=3)
    threading.Timer(0.05, b.put, ("/networks/from-b", "b")).start()
    assert next(seen_by_a) == Event("put", "/networks/from-b", "b", since + 1)
    threading.Timer(0.05, a.put, ("/networks/from-a", "a")).start()
    assert next(seen_by_b) == Event("put", "/networks/from-b", "b", since + 1)
    assert next(seen_by_b) == Event("put", "/networks/from-a", "a", since + 2)


PUT_LATER = """
import sys, time
from pydp.store import EtcdStore
store = EtcdStore(sys.argv[1])
time.sleep(0.3)
store.put("/networks/c", "3")
print(time.time(), flush=True)
"""


def test_etcd_watch_sees_another_process_put_within_100ms(store: EtcdStore, url: str) -> None:
    """A watch yields a put made by another process (another host) within ~100 ms."""
    since = store.revision()
    events = store.watch("/networks/", since=since, timeout=10)
    proc = subprocess.Popen([sys.executable, "-c", PUT_LATER, url], stdout=subprocess.PIPE)
    try:
        assert next(events) == Event("put", "/networks/c", "3", since + 1)
        seen = time.time()
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert seen - float(out) < 0.1


def test_etcd_watch_replay_ends_at_the_current_revision(store: EtcdStore, url: str) -> None:
    """History is replayed up to the revision at the start even when that revision's change
    is outside the prefix (or the store), then a timeout of 0 ends the watch."""
    elsewhere = EtcdStore(url + "-elsewhere")
    since = store.revision()
    store.put("/w/a", "1")
    store.put("/other", "1")
    elsewhere.put("/w/b", "1")
    start = time.monotonic()
    assert list(store.watch("/w/", since=since, timeout=0)) == [
        Event("put", "/w/a", "1", since + 1)
    ]
    assert time.monotonic() - start < 1.0


def test_etcd_watch_on_a_new_cluster(etcd: EtcdServer) -> None:
    """Watching a new cluster from 0 (revision 1 has no event) replays nothing and follows."""
    store = EtcdStore(etcd.url("/new"))
    events = store.watch("/", since=0, timeout=2)
    threading.Timer(0.05, store.put, ("/a", "1")).start()
    assert next(events) == Event("put", "/a", "1", 2)


@pytest.mark.parametrize("phase", ["history", "live"])
def test_etcd_watch_resumes_after_a_broken_stream(
    store: EtcdStore, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    """A watch whose connection breaks, while replaying history or following new changes,
    watches again from its last revision and loses nothing."""
    since = store.revision()
    if phase == "history":
        store.put("/a", "0")
        since = store.revision()
        store.put("/a", "1")
    events = store.watch("/", since=since, timeout=3)
    broken: list[Stream] = []
    get = Stream.get

    def break_first(self: Stream, timeout: float | None) -> object:
        if not broken:
            broken.append(self)
            self.close()  # as if etcd went away: the reader thread ends the stream
        return get(self, timeout)

    monkeypatch.setattr(Stream, "get", break_first)
    if phase == "live":
        threading.Timer(0.1, store.put, ("/a", "1")).start()
    assert next(events) == Event("put", "/a", "1", since + 1)
    assert len(broken) == 1


# leases ---------------------------------------------------------------------------------
def test_etcd_lease_put_keepalive_revoke(store: EtcdStore, tmp_path: Path) -> None:
    """A key put with a lease goes when the lease is revoked (a delete event); an ended
    lease is NotFoundError for keep-alive and put, and a second revoke is False."""
    assert isinstance(store, Leases) and not isinstance(SQLiteStore(tmp_path / "s.db"), Leases)
    lease = store.lease_grant(30)
    since = store.revision()
    revision = store.put("/nodes/a", "up", lease=lease)
    assert store.lease_keepalive(lease) == 30
    assert store.lease_revoke(lease) is True
    assert store.get("/nodes/a") is None
    assert list(store.watch("/nodes/", since=since, timeout=0)) == [
        Event("put", "/nodes/a", "up", revision),
        Event("delete", "/nodes/a", None, revision + 1),
    ]
    assert store.lease_revoke(lease) is False
    with pytest.raises(NotFoundError) as e:
        store.lease_keepalive(lease)
    assert str(e.value) == f"lease keepalive {lease:x}: the lease has expired or was revoked"
    with pytest.raises(NotFoundError) as e:
        store.put("/nodes/a", "up", lease=lease)
    assert str(e.value) == f"put /nodes/a: lease {lease:x} not found"
    with pytest.raises(ConfigError) as e:
        store.lease_grant(0)
    assert str(e.value) == "lease grant: ttl must be a number of seconds >= 1, got 0"


def test_etcd_lease_expiry_is_a_delete_event(store: EtcdStore) -> None:
    """A key whose lease (TTL 2 s) is not kept alive is deleted by etcd: a delete event."""
    lease = store.lease_grant(2)
    kept = store.lease_grant(2)
    since = store.revision()
    start = time.monotonic()
    store.put("/nodes/gone", "1", lease=lease)
    store.put("/nodes/kept", "1", lease=kept)
    events = store.watch("/nodes/", since=since, timeout=6)
    assert [e.kind for e in (next(events), next(events))] == ["put", "put"]
    stop_keeping = threading.Event()

    def keep() -> None:
        while not stop_keeping.wait(0.5):
            store.lease_keepalive(kept)

    keeper = threading.Thread(target=keep)
    keeper.start()
    try:
        gone = next(events)
        elapsed = time.monotonic() - start
        assert gone.kind == "delete" and gone.key == "/nodes/gone", gone
        assert 1.5 <= elapsed < 5.0, elapsed
        time.sleep(0.5)
        assert store.get("/nodes/kept") is not None
    finally:
        stop_keeping.set()
        keeper.join()
        store.lease_revoke(kept)


# TLS -------------------------------------------------------------------------------------
def test_etcd_tls_with_client_certificates(tmp_path: Path) -> None:
    """etcd with --client-cert-auth: a client with the CA and its certificate works; one
    without a certificate, or trusting another CA, fails with one clear line."""
    certs = make_certs(tmp_path / "pki")
    strange = make_certs(tmp_path / "other-pki")
    with etcd_server(tmp_path, tls=certs) as etcd:
        with EtcdStore(etcd.url("/tls")) as store:
            revision = store.put("/a", "1")
            assert store.get("/a") == Entry("/a", "1", revision, revision)
            assert next(store.watch("/", since=revision - 1, timeout=2)).key == "/a"
        with pytest.raises(EtcdError) as e:
            EtcdStore(etcd.url("/tls", client_cert=False))
        assert str(e.value) == (
            f"store etcds://{etcd.endpoint}/tls: cannot reach etcd ({etcd.endpoint}: TLS: "
            "etcd refused a client without a certificate (add cert=FILE&key=FILE))"
        )
        wrong_ca = etcd.url("/tls").replace(str(certs.ca), str(strange.ca))
        with pytest.raises(EtcdError) as e:
            EtcdStore(wrong_ca)
        assert str(e.value) == (
            f"store etcds://{etcd.endpoint}/tls: cannot reach etcd ({etcd.endpoint}: TLS: "
            "certificate verify failed: unable to get local issuer certificate)"
        )
        with pytest.raises(ConfigError) as e2:
            EtcdStore(f"etcds://{etcd.endpoint}/tls?cacert={tmp_path}/missing.pem")
        assert str(e2.value) == (
            f"store etcds://{etcd.endpoint}/tls: cacert {tmp_path}/missing.pem: "
            "No such file or directory"
        )

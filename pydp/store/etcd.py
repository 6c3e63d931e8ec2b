"""The many-host store: the Store interface on etcd's v3 API (etcd 3.4 and later).

Chosen with ``--store`` or ``$PYDP_STORE``::

    etcd://HOST:PORT[,HOST:PORT...][/PREFIX]
    etcds://HOST:PORT[,HOST:PORT...][/PREFIX][?cacert=FILE&cert=FILE&key=FILE]

``etcds`` is TLS: ``cacert`` is the CA that signed etcd's certificate (default: the
system's), ``cert`` and ``key`` this client's certificate for etcd's
``--client-cert-auth``. Every pydp key lives under PREFIX (default ``/pydp``), so
``/networks/a`` is etcd's ``/pydp/networks/a`` and a shared etcd is not polluted.

How the Store's semantics map onto etcd:

- Revisions are etcd's own: the cluster-wide revision, so a new store is at its cluster's
  revision (1 on a new cluster), and other users of the cluster move it too.
- Writes: ``put`` is etcd's Put, ``delete`` its DeleteRange of one key; a transaction
  gives each key one operation, so a key deleted and put again in one transaction keeps
  its ``created`` (etcd refuses two operations on one key in a Txn).
- A transaction is optimistic. Reads go to etcd at one revision R (the first read's), so
  they see one consistent state; writes are buffered. The commit is one etcd Txn whose
  compares hold iff nothing read has changed since R, and which otherwise writes nothing:
  a TxnConflictError naming what changed (``run_transaction`` runs a function again on
  it). A key read compares its ``mod_revision`` (0 for a key read as absent). A prefix
  listed compares ``mod_revision < R + 1`` over its range, which catches keys created or
  changed but not deleted ones (they are gone from the range), and etcd caps compares per
  Txn (``--max-txn-ops``, 128; nested Txns count against the same cap), so one compare
  per listed key does not scale. Hence directory guards: every write of a key
  ``/DIR/...`` (or of a top-level key ``/NAME``) also puts etcd's ``PREFIX#guard/DIR/``
  in the same Txn (outside the store's keys, so no list or watch sees it), and a listed
  prefix compares its directory's guard (or, for ``/`` or ``/net``, every guard under
  it): any write there after R, deletions included, is a conflict. Keys read one by one
  are compared one by one, or past the cap through their directories' guards. Deletions
  that no pydp write makes (a lease expiring, another etcd client) move no guard: a
  transaction that only listed such a key does not see them as a conflict.
- ``expect`` (compare-and-swap) is an etcd compare on ``mod_revision``.
- A watch replays history in revision order from ``since`` and then follows new changes;
  events of one revision come in key order (etcd sends them in the Txn's order). etcd
  3.4 tells no client when a replay is complete (its progress notifications can overtake
  history), yet a ``timeout`` may only end the watch after it: so the history, ``since``
  to the revision R when iteration starts, comes from a watch of the whole key space,
  where every revision has an event, ending at the event at R; changes after R come from
  a watch of the prefix alone. A watch whose connection breaks resumes after the last
  revision it saw, on any endpoint. A compacted ``since`` is CompactedError, at the call
  or when reading, with ``compacted`` = etcd's compact revision - 1 (the newest dropped
  revision, as in the SQLite store).
- ``compact(N)`` is etcd's Compact(N + 1), which drops revisions below N + 1; etcd cannot
  compact past its current revision, so ``compact(current)`` keeps the current one.
  Compaction is cluster-wide.
- Leases: ``lease_grant``, ``lease_keepalive``, ``lease_revoke`` and ``put(lease=)``; a
  key whose lease ends is deleted by etcd (a delete event in watches).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, runtime_checkable

from pydp.errors import ConfigError, ConflictError, NotFoundError

from ._etcdclient import Client, EtcdError, Stream, b64, unb64
from ._etcdtxn import EtcdTxn, TxnConflictError, check_lease, directory
from ._etcdurl import DEFAULT_PREFIX, URL_FORM, EtcdURL, parse_url, range_end
from .base import CompactedError, Entry, Event, Store, Txn, check_expect, check_key, check_value

__all__ = [
    "DEFAULT_PREFIX",
    "MAX_TXN_OPS",
    "TIMEOUT",
    "URL_FORM",
    "EtcdError",
    "EtcdStore",
    "EtcdURL",
    "Leases",
    "TxnConflictError",
    "parse_url",
]

log = logging.getLogger(__name__)

TIMEOUT = 10.0  # seconds for one request to etcd
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops: compares (and operations) per Txn
_POLL = 0.05  # seconds between checks of a watch's stop event
GUARD = "#guard"  # etcd's PREFIX#guard/DIR/ moves with every write under /DIR/ (see above)

Json = dict[str, Any]


@runtime_checkable
class Leases(Protocol):
    """Leases, as etcd has them: keys put with a lease are deleted when it ends."""

    def lease_grant(self, ttl: int) -> int: ...

    def lease_keepalive(self, lease: int) -> int: ...

    def lease_revoke(self, lease: int) -> bool: ...


# the store --------------------------------------------------------------------------------
class EtcdStore(Store):
    """A Store on an etcd cluster, shared by every pydp host that names the same URL.

    Safe to share between threads; opening it checks that etcd answers.
    """

    def __init__(
        self, url: str | EtcdURL, *, timeout: float = TIMEOUT, max_txn_ops: int = MAX_TXN_OPS
    ) -> None:
        if max_txn_ops < 2:
            raise ConfigError(f"open store {url}: max_txn_ops must be >= 2, got {max_txn_ops}")
        self.url = parse_url(url) if isinstance(url, str) else url
        self.prefix = self.url.prefix
        self.name = str(self.url)
        self.max_txn_ops = max_txn_ops
        self._client = Client(self.name, list(self.url.endpoints), self.url.tls, timeout)
        self._local = threading.local()
        try:
            revision = self.revision()
        except BaseException:
            self._client.close()
            raise
        log.debug("store %s: open at revision %d", self.name, revision)

    def __repr__(self) -> str:
        return f"EtcdStore({self.name!r})"

    # helpers ------------------------------------------------------------------------------
    def _call(self, method: str, body: Json, idempotent: bool = False) -> Json:
        return self._client.call(method, body, idempotent=idempotent)

    def _ek(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def _range(self, prefix: str) -> Json:
        ek = self._ek(prefix)
        return {"key": b64(ek), "range_end": b64(range_end(ek))}

    def _guards(self, prefix: str) -> Json:
        """The directory guards of every key under ``prefix``: one guard if ``prefix``
        reaches into a directory, else all those whose directory starts with it."""
        if "/" in prefix[1:]:
            return {"key": b64(self._guard(directory(prefix)))}
        guard = self._guard(prefix)
        return {"key": b64(guard), "range_end": b64(range_end(guard))}

    def _guard(self, name: str) -> bytes:
        return (self.prefix + GUARD + name).encode()

    def _guard_puts(self, keys: builtins.list[str]) -> builtins.list[Json]:
        """Puts that move the guards of the directories of ``keys`` (one each)."""
        names = sorted({directory(k) for k in keys})
        return [{"request_put": {"key": b64(self._guard(name))}} for name in names]

    def _guard_revision(self, prefix: str) -> int:
        """The newest revision of the directory guards of ``prefix`` (0: none)."""
        kvs = self._call("kv/range", self._guards(prefix), True).get("kvs", [])
        return max((int(kv.get("mod_revision", 0)) for kv in kvs), default=0)

    def _entry(self, kv: Json) -> Entry:
        key = unb64(kv["key"]).decode(errors="replace")[len(self.prefix) :]
        value = unb64(kv.get("value", "")).decode(errors="replace")
        return Entry(key, value, int(kv.get("mod_revision", 0)), int(kv.get("create_revision", 0)))

    def _writing(self, op: str) -> None:
        if getattr(self._local, "txn", False):
            raise ConfigError(f"{op}: the store is inside a transaction; use the Txn")

    # reads --------------------------------------------------------------------------------
    def revision(self) -> int:
        answer = self._call("kv/range", {"key": b64(self._ek("/")), "count_only": True}, True)
        return int(answer["header"]["revision"])

    def get(self, key: str) -> Entry | None:
        answer = self._call("kv/range", {"key": b64(self._ek(check_key(key)))}, True)
        kvs = answer.get("kvs", [])
        return self._entry(kvs[0]) if kvs else None

    def list(self, prefix: str) -> list[Entry]:
        return self.snapshot(prefix)[1]

    def snapshot(self, prefix: str) -> tuple[int, builtins.list[Entry]]:
        answer = self._call("kv/range", self._range(check_key(prefix, "prefix")), True)
        entries = [self._entry(kv) for kv in answer.get("kvs", [])]
        return int(answer["header"]["revision"]), entries

    # writes -------------------------------------------------------------------------------
    def put(self, key: str, value: str, expect: int | None = None, lease: int | None = None) -> int:
        """Store.put; ``lease``: the key is deleted when that lease ends."""
        check_value(check_key(key), value)
        _check_expect_arg("put", key, expect)
        check_lease(f"put {key}", lease)
        self._writing(f"put {key}")
        put: Json = {"key": b64(self._ek(key)), "value": b64(value.encode())}
        if lease is not None:
            put["lease"] = lease
        ops = [{"request_put": put}, *self._guard_puts([key])]
        try:
            if expect is None:
                answer = self._call("kv/txn", {"success": ops})
            else:
                answer = self._cas("put", key, expect, ops)
        except EtcdError as e:
            if e.code == 5 and lease is not None:
                raise NotFoundError(f"put {key}: lease {lease:x} not found") from None
            raise
        return int(answer["header"]["revision"])

    def delete(self, key: str, expect: int | None = None) -> bool:
        check_key(key)
        _check_expect_arg("delete", key, expect)
        self._writing(f"delete {key}")
        ek = b64(self._ek(key))
        ops = [{"request_delete_range": {"key": ek}}, *self._guard_puts([key])]
        if expect is None:  # only an existing key: deleting nothing makes no revision
            exists = {"key": ek, "target": "CREATE", "result": "GREATER", "create_revision": 0}
            return bool(
                self._call("kv/txn", {"compare": [exists], "success": ops}).get("succeeded")
            )
        if expect == 0:  # the key must be absent: then there is nothing to delete
            self._cas("delete", key, 0, [])
            return False
        self._cas("delete", key, expect, ops)
        return True

    def _cas(self, op: str, key: str, expect: int, success: builtins.list[Json]) -> Json:
        """One Txn: ``success`` if the key's mod_revision is ``expect``, else ConflictError
        with the message ``check_expect`` gives for what the key was."""
        ek = b64(self._ek(key))
        compare = {"key": ek, "target": "MOD", "result": "EQUAL", "mod_revision": expect}
        body = {
            "compare": [compare],
            "success": success,
            "failure": [{"request_range": {"key": ek}}],
        }
        answer = self._call("kv/txn", body)
        if answer.get("succeeded"):
            return answer
        kvs = answer["responses"][0]["response_range"].get("kvs", [])
        check_expect(op, key, self._entry(kvs[0]) if kvs else None, expect)
        raise ConflictError(f"{op} {key}: changed while compared; try again")  # not reached

    def transaction(self) -> AbstractContextManager[Txn]:
        return self._transaction("transaction")

    @contextmanager
    def _transaction(self, op: str) -> Iterator[EtcdTxn]:
        self._writing(op)
        txn = EtcdTxn(self)
        self._local.txn = True
        try:
            yield txn
            txn.commit()
        finally:
            self._local.txn = False
            txn.end()

    def compact(self, revision: int) -> None:
        self._writing(f"compact {revision}")
        current = self.revision()
        if isinstance(revision, bool) or not isinstance(revision, int):
            raise ConfigError(f"compact {revision!r}: expected a revision in 0..{current}")
        if not 0 <= revision <= current:
            raise ConfigError(f"compact {revision}: expected a revision in 0..{current}")
        try:
            self._call("kv/compaction", {"revision": min(revision + 1, current)})
        except EtcdError as e:
            if "compacted" not in str(e):  # compacted there already: nothing to do
                raise
        log.debug("store %s: compacted history up to revision %d", self.name, revision)

    # leases -------------------------------------------------------------------------------
    def lease_grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds (etcd may raise it to its minimum); its id."""
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ConfigError(f"lease grant: ttl must be a number of seconds >= 1, got {ttl!r}")
        lease = int(self._call("lease/grant", {"TTL": ttl})["ID"])
        log.debug("store %s: granted lease %x for %d s", self.name, lease, ttl)
        return lease

    def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease``; its TTL again. NotFoundError if it has ended."""
        check_lease("lease keepalive", lease)
        answer = self._call("lease/keepalive", {"ID": lease}, True)
        ttl = int(answer.get("TTL", 0))
        if ttl <= 0:
            raise NotFoundError(f"lease keepalive {lease:x}: the lease has expired or was revoked")
        return ttl

    def lease_revoke(self, lease: int) -> bool:
        """End ``lease`` now, deleting its keys; False if it had ended already."""
        check_lease("lease revoke", lease)
        try:
            self._call("lease/revoke", {"ID": lease}, True)
        except EtcdError as e:
            if e.code == 5:  # not found
                return False
            raise
        return True

    # watch --------------------------------------------------------------------------------
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
        self._history_end(prefix, since)  # a compacted `since` fails now, not at first next()
        return self._watch(prefix, since, timeout, stop)

    def _history_end(self, prefix: str, since: int) -> int:
        """The revision up to which history is replayed (``since``: none); CompactedError
        if the history after ``since`` is gone."""
        body = {**self._range(prefix), "revision": since + 1, "count_only": True}
        try:
            return int(self._call("kv/range", body, True)["header"]["revision"])
        except EtcdError as e:
            if "future revision" in str(e):
                return since
            if "compacted" in str(e):
                raise self._compacted(prefix, since) from None
            raise

    def _compacted(self, prefix: str, since: int) -> CompactedError:
        """CompactedError for ``since``, with etcd's compact revision (a watch tells it)."""
        stream = self._open_watch(b"\0", b"\0", since + 1)
        try:
            deadline = time.monotonic() + self._client.timeout
            while time.monotonic() < deadline:
                answer = stream.get(_POLL)
                if answer is not None and "compact_revision" in answer:
                    return _compacted_error(prefix, since, int(answer["compact_revision"]) - 1)
        finally:
            stream.close()
        raise EtcdError(f"store {self.name}: watch {prefix}: history since {since} is compacted")

    def _open_watch(self, key: bytes, end: bytes, start: int) -> Stream:
        create = {"key": b64(key), "range_end": b64(end), "start_revision": start}
        return self._client.stream("watch", {"create_request": create})

    def _events(self, answer: Json, prefix: str, since: int) -> builtins.list[Event]:
        """The events of one watch answer in (revision, key) order; CompactedError or
        EtcdError if etcd ended the watch."""
        if "compact_revision" in answer:
            raise _compacted_error(prefix, since, int(answer["compact_revision"]) - 1)
        if answer.get("canceled"):
            reason = answer.get("cancel_reason", "canceled by etcd")
            raise EtcdError(f"store {self.name}: watch {prefix}: {reason}")
        events = []
        for raw in answer.get("events", []):
            kv = raw["kv"]
            ek = unb64(kv["key"])
            if not ek.startswith(self._ek(prefix)):
                continue
            key = ek.decode(errors="replace")[len(self.prefix) :]
            revision = int(kv.get("mod_revision", 0))
            if raw.get("type") == "DELETE":
                events.append(Event("delete", key, None, revision))
            else:
                value = unb64(kv.get("value", "")).decode(errors="replace")
                events.append(Event("put", key, value, revision))
        events.sort(key=lambda e: (e.revision, e.key))
        return events

    def _watch(
        self,
        prefix: str,
        since: int,
        timeout: float | None,
        stop: threading.Event | None,
    ) -> Iterator[Event]:
        upto = self._history_end(prefix, since)  # history: up to the revision when read
        if upto > since and upto > 1:  # revision 1 of a new cluster has no event
            with contextlib.closing(self._replay(prefix, since, upto, stop)) as replay:
                for event in replay:
                    if stop is not None and stop.is_set():
                        return
                    yield event
        last = max(upto, since)
        ek = self._ek(prefix)
        stream = self._open_watch(ek, range_end(ek), last + 1)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while stop is None or not stop.is_set():
                wait = None if stop is None else _POLL
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    wait = left if wait is None else min(wait, left)
                try:
                    answer = stream.get(wait)
                except EtcdError:
                    stream.close()
                    stream = self._resume(ek, range_end(ek), last, stop)
                    continue
                if answer is None:
                    continue
                events = self._events(answer, prefix, last)
                for event in events:
                    if stop is not None and stop.is_set():
                        return
                    yield event
                    last = max(last, event.revision)
                if events and timeout is not None:
                    deadline = time.monotonic() + timeout
        finally:
            stream.close()

    def _replay(
        self, prefix: str, since: int, upto: int, stop: threading.Event | None
    ) -> Generator[Event, None, None]:
        """History under ``prefix`` in (since, upto], from a watch of the whole key space
        that ends at the first event at ``upto`` or later (etcd has one at each revision)."""
        stream = self._open_watch(b"\0", b"\0", since + 1)
        seen = since  # every event up to here has been received
        try:
            quiet = time.monotonic() + self._client.timeout
            while stop is None or not stop.is_set():
                try:
                    answer = stream.get(_POLL)
                except EtcdError:
                    stream.close()
                    stream = self._resume(b"\0", b"\0", seen, stop)
                    continue
                if answer is None:
                    if time.monotonic() > quiet:
                        raise EtcdError(
                            f"store {self.name}: watch {prefix}: etcd sent no history for "
                            f"{self._client.timeout:g} s"
                        )
                    continue
                quiet = time.monotonic() + self._client.timeout
                revisions = [int(e["kv"].get("mod_revision", 0)) for e in answer.get("events", [])]
                for event in self._events(answer, prefix, seen):
                    if event.revision <= upto:
                        yield event
                if revisions:
                    seen = max(seen, *revisions)
                if seen >= upto:
                    return
        finally:
            stream.close()

    def _resume(self, key: bytes, end: bytes, last: int, stop: threading.Event | None) -> Stream:
        """A new watch of [key, end) after ``last``, on any endpoint, after a stream broke;
        EtcdError if etcd cannot be reached for ``timeout`` seconds."""
        deadline = time.monotonic() + self._client.timeout
        while True:
            try:
                stream = self._open_watch(key, end, last + 1)
                log.info("store %s: watch resumed after revision %d", self.name, last)
                return stream
            except EtcdError:
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    raise
            time.sleep(0.2)

    def close(self) -> None:
        self._client.close()


def _compacted_error(prefix: str, since: int, compacted: int) -> CompactedError:
    return CompactedError(
        f"watch {prefix} since revision {since}: history up to revision {compacted} is "
        "compacted; list again and watch from that list's revision",
        compacted,
    )


def _check_expect_arg(op: str, key: str, expect: int | None) -> None:
    if expect is not None and (
        isinstance(expect, bool) or not isinstance(expect, int) or expect < 0
    ):
        raise ConfigError(f"{op} {key}: expect must be a revision >= 0, got {expect!r}")

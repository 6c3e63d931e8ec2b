"""Optimistic transactions on etcd: reads at one revision, recorded; writes buffered
until the commit, one etcd Txn whose compares hold iff nothing read has changed."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from pydp.errors import ConfigError, ConflictError

from ._etcdclient import EtcdError, b64
from .base import Entry, check_key, check_value

if TYPE_CHECKING:
    from .etcd import EtcdStore

__all__ = ["EtcdTxn", "TxnConflictError", "check_lease", "directory"]

Json = dict[str, Any]


class TxnConflictError(ConflictError):
    """A transaction's commit found that something it read had changed: run it again."""


class EtcdTxn:
    """An optimistic transaction: reads at one etcd revision, recorded; writes buffered
    until ``commit``, one etcd Txn comparing everything read (see the module's doc)."""

    def __init__(self, store: EtcdStore) -> None:
        self._store: EtcdStore | None = store
        self.read_revision: int | None = None  # the revision every read is made at
        self.revision: int | None = None  # the revision of the commit, if it wrote
        self._seen: dict[str, Entry | None] = {}  # keys read (None: absent) at read_revision
        self._lists: dict[str, list[Entry]] = {}  # prefixes listed at read_revision
        self._writes: dict[str, tuple[str, int | None] | None] = {}  # value, lease; None: deleted

    def _s(self) -> EtcdStore:
        if self._store is None:
            raise ConfigError("transaction: used after it ended")
        return self._store

    def end(self) -> None:
        self._store = None

    def _read(self, body: Json) -> Json:
        store = self._s()
        if self.read_revision is not None:
            body["revision"] = self.read_revision
        try:
            answer = store._call("kv/range", body, True)
        except EtcdError as e:
            if "compacted" in str(e):
                raise TxnConflictError(
                    f"transaction: revision {self.read_revision} was compacted while it ran; "
                    "retry the transaction"
                ) from None
            raise
        if self.read_revision is None:
            self.read_revision = int(answer["header"]["revision"])
        return answer

    def _base(self, key: str) -> Entry | None:
        """``key`` as it was at read_revision (recorded for the commit's compares)."""
        if key not in self._seen:
            for prefix, entries in self._lists.items():
                if key.startswith(prefix):
                    self._seen[key] = next((e for e in entries if e.key == key), None)
                    return self._seen[key]
            kvs = self._read({"key": b64(self._s()._ek(key))}).get("kvs", [])
            self._seen[key] = self._s()._entry(kvs[0]) if kvs else None
        return self._seen[key]

    def _local(self, key: str) -> Entry | None:
        """``key`` after this transaction's writes; written entries carry its provisional
        revision (read_revision + 1: the commit's, unless another write comes first)."""
        written = self._writes[key]
        if written is None:
            return None
        base = self._base(key)
        assert self.read_revision is not None
        provisional = self.read_revision + 1
        # a key deleted and put again here keeps its created: etcd cannot delete and
        # create one key in one revision ("duplicate key given in txn request")
        created = provisional if base is None else base.created
        return Entry(key, written[0], provisional, created)

    def get(self, key: str) -> Entry | None:
        check_key(key)
        self._s()
        return self._local(key) if key in self._writes else self._base(key)

    def list(self, prefix: str) -> list[Entry]:
        check_key(prefix, "prefix")
        store = self._s()
        if prefix not in self._lists:
            kvs = self._read(store._range(prefix)).get("kvs", [])
            self._lists[prefix] = [store._entry(kv) for kv in kvs]
            for listed in self._lists[prefix]:
                self._seen.setdefault(listed.key, listed)
        merged = {e.key: e for e in self._lists[prefix]}
        for key in self._writes:
            if key.startswith(prefix):
                entry = self._local(key)
                if entry is None:
                    merged.pop(key, None)
                else:
                    merged[key] = entry
        return [merged[k] for k in sorted(merged)]

    def put(self, key: str, value: str, lease: int | None = None) -> None:
        check_value(check_key(key), value)
        check_lease(f"put {key}", lease)
        self._s()
        self._writes[key] = (value, lease)

    def delete(self, key: str) -> bool:
        if self.get(key) is None:
            return False
        self._writes[key] = None
        return True

    def commit(self) -> None:
        store = self._s()
        ops, written = [], []
        for key in sorted(self._writes):
            value = self._writes[key]
            if value is None:
                if self._seen.get(key) is not None:  # else: made and removed here, no trace
                    ops.append({"request_delete_range": {"key": b64(store._ek(key))}})
                    written.append(key)
                continue
            put: Json = {"key": b64(store._ek(key)), "value": b64(value[0].encode())}
            if value[1] is not None:
                put["lease"] = value[1]
            ops.append({"request_put": put})
            written.append(key)
        if not ops:
            return
        ops += store._guard_puts(written)
        if len(ops) > store.max_txn_ops:
            raise EtcdError(
                f"store {store.name}: transaction: {len(written)} writes (and their "
                f"{len(ops) - len(written)} directory guards) are more than etcd takes in one "
                f"transaction (--max-txn-ops {store.max_txn_ops})"
            )
        answer = store._call("kv/txn", {"compare": self._compares(store), "success": ops})
        if not answer.get("succeeded"):
            raise self._conflict(store)
        self.revision = int(answer["header"]["revision"])

    def _compares(self, store: EtcdStore) -> builtins.list[Json]:
        """Compares that hold iff nothing this transaction read has changed since
        read_revision R: per prefix listed, no key there changed after R (as seen by its
        keys' mod_revision and, for deletions, by its directory guards); per other key
        read, its mod_revision (0: absent). Past etcd's cap on compares, those keys are
        compared through their directories' guards instead (any write there conflicts)."""
        assert self.read_revision is not None or not self._seen
        after = (self.read_revision or 0) + 1

        def unchanged(rng: Json) -> Json:
            return {**rng, "target": "MOD", "result": "LESS", "mod_revision": after}

        compares = []
        for prefix in sorted(self._lists):
            compares += [unchanged(store._range(prefix)), unchanged(store._guards(prefix))]
        keys = sorted(k for k in self._seen if not any(k.startswith(p) for p in self._lists))
        if len(compares) + len(keys) > store.max_txn_ops:
            return compares + [
                unchanged(store._guards(d)) for d in sorted(set(map(directory, keys)))
            ]
        for key in keys:
            entry = self._seen[key]
            revision = 0 if entry is None else entry.revision
            compares.append(
                {
                    "key": b64(store._ek(key)),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": revision,
                }
            )
        return compares

    def _conflict(self, store: EtcdStore) -> TxnConflictError:
        """TxnConflictError naming the first key, or else prefix, found changed."""
        changed = "a key it read"
        for key, entry in sorted(self._seen.items()):
            now = store.get(key)
            if (now and now.revision) != (entry and entry.revision):
                changed = key
                break
        else:
            assert self.read_revision is not None
            dirs = sorted({directory(k) for k in self._seen})  # compared through guards?
            for prefix in [*sorted(self._lists), *dirs]:
                if store._guard_revision(prefix) > self.read_revision or any(
                    e.revision > self.read_revision for e in store.list(prefix)
                ):
                    changed = prefix
                    break
        return TxnConflictError(
            f"transaction: {changed} changed after revision {self.read_revision}, "
            "while the transaction ran; retry the transaction"
        )


def directory(key: str) -> str:
    """What a directory guard stands for: ``key`` up to its second "/" (``/networks/`` for
    ``/networks/a``), or all of it when it has none (``/settings``)."""
    end = key.find("/", 1)
    return key if end < 0 else key[: end + 1]


def check_lease(op: str, lease: int | None) -> None:
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, int) or lease <= 0):
        raise ConfigError(f"{op}: lease must be a lease id > 0, got {lease!r}")

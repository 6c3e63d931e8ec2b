"""pydp's desired state: JSON text under keys, with etcd's revisions, watch and transactions.

Two stores implement ``Store``: SQLite, a file in the host's state directory (the default,
for one host), and etcd (``etcd://HOST:PORT``), shared by many hosts. ``open_store()``
opens the one asked for; ``run_transaction()`` runs a function in a transaction and runs
it again when an optimistic store (etcd) finds a conflict at commit.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydp.errors import ConfigError

from . import sqlite
from .base import CompactedError, Entry, Event, Store, Txn
from .etcd import (
    DEFAULT_PREFIX,
    URL_FORM,
    EtcdError,
    EtcdStore,
    EtcdURL,
    Leases,
    TxnConflictError,
    parse_url,
)
from .sqlite import DEFAULT_STATE_DIR, HISTORY, SQLiteStore

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_STATE_DIR",
    "HISTORY",
    "TXN_ATTEMPTS",
    "URL_FORM",
    "CompactedError",
    "Entry",
    "EtcdError",
    "EtcdStore",
    "EtcdURL",
    "Event",
    "Leases",
    "SQLiteStore",
    "Store",
    "Txn",
    "TxnConflictError",
    "open_store",
    "parse_url",
    "run_transaction",
]

TXN_ATTEMPTS = 5  # runs of a transaction's function before its conflict is reported

_T = TypeVar("_T")


def open_store(location: str | Path | None = None, *, state_dir: Path | None = None) -> Store:
    """The store at ``location``: an etcd URL (``etcd://`` or ``etcds://``, see
    ``pydp.store.etcd``) as a string, or a state directory as a Path (SQLite's
    ``state.db`` there). None: ``$PYDP_STORE`` if set, else the SQLite store in
    ``state_dir`` (default ``$PYDP_STATE_DIR``, else /var/lib/pydp).

    A given ``state_dir`` is created (mode 0700) whichever the store, since the host keeps
    more than the store there.
    """
    if state_dir is not None:
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"create state directory {state_dir}: {e.strerror}", e.errno
            ) from None
    if location is None:
        location = os.environ.get("PYDP_STORE") or None
    if location is None:
        return sqlite.open_store(state_dir)
    if isinstance(location, Path):
        return sqlite.open_store(location)
    return EtcdStore(parse_url(location))


def run_transaction(store: Store, fn: Callable[[Txn], _T], attempts: int = TXN_ATTEMPTS) -> _T:
    """``fn(txn)`` inside ``store.transaction()``, run again (up to ``attempts`` runs in all,
    after a short random pause) when the commit raises TxnConflictError; ``fn`` must
    therefore only read and write through the Txn. The last conflict is raised."""
    for attempt in range(1, attempts + 1):
        try:
            with store.transaction() as txn:
                return fn(txn)
        except TxnConflictError:
            if attempt >= attempts:
                raise
            time.sleep(random.uniform(0, 0.01 * attempt))
    raise ConfigError(f"run_transaction: attempts must be >= 1, got {attempts}")

"""pydp's desired state: JSON text under keys, with etcd's revisions, watch and transactions.

``open_store()`` opens the host's SQLite store; an etcd store implements the same ``Store``.
"""

from __future__ import annotations

from .base import CompactedError, Entry, Event, Store, Txn
from .sqlite import DEFAULT_STATE_DIR, HISTORY, SQLiteStore, open_store

__all__ = [
    "DEFAULT_STATE_DIR",
    "HISTORY",
    "CompactedError",
    "Entry",
    "Event",
    "SQLiteStore",
    "Store",
    "Txn",
    "open_store",
]

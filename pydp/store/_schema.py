"""The SQLite schema, its version (``PRAGMA user_version``) and the migrations to it.

``MIGRATIONS[n]`` takes a database from version n to n + 1; version 0 is a new, empty
file, so creating a database is the first migration. To change the schema, append a
migration and the code follows: ``SCHEMA_VERSION`` is ``len(MIGRATIONS)``.

Tables:
- ``kv``: the current entries (key, value, revision, created).
- ``history``: one row per key changed at a revision (revision, key, kind, value), for
  watch; rows up to ``meta.compacted`` are dropped.
- ``meta``: ``revision`` (the store revision) and ``compacted`` (newest dropped revision).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from pydp.errors import ConfigError

log = logging.getLogger(__name__)

_V1 = """
CREATE TABLE kv (
    key      TEXT PRIMARY KEY,
    value    TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE history (
    revision INTEGER NOT NULL,
    key      TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('put', 'delete')),
    value    TEXT,
    PRIMARY KEY (revision, key)
) WITHOUT ROWID;
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database to SCHEMA_VERSION inside the caller's write transaction.

    A database newer than this code is refused with ConfigError, untouched.
    """
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"open store {path}: schema version {version} is newer than this pydp "
            f"supports ({SCHEMA_VERSION}); upgrade pydp"
        )
    for n in range(version, SCHEMA_VERSION):
        for statement in MIGRATIONS[n].split(";"):
            if statement.strip():
                conn.execute(statement)
        log.info("store %s: schema migrated from version %d to %d", path, n, n + 1)
    if version != SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

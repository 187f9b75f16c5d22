"""The sqlite connection: WAL mode, foreign keys, migrations on open."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from criruntime.store.schema import MIGRATIONS

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(Exception):
    """The database is not one this criruntime can use as it is; refusing beats corrupting it."""


class SchemaTooNew(SchemaError):
    """The database was written by a newer criruntime."""


def _columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}


def _expected_columns() -> dict[str, list[str]]:
    """The tables and columns the migrations make, as a fresh in-memory database shows them."""
    conn = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS:
            conn.executescript(migration)
        return _columns(conn)
    finally:
        conn.close()


class Database:
    """One connection shared by the daemon. sqlite calls here are sub-millisecond, so they run
    inline on the event loop; the lock serialises writers from executor threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so transactions are explicit.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode; only power loss may lose the tail.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self._check_tables()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path}: schema version {current} is newer than this criruntime's "
                f"({SCHEMA_VERSION}); upgrade criruntime or move the root dir aside"
            )
        for version in range(current, SCHEMA_VERSION):
            with self.transaction() as conn:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    def _check_tables(self) -> None:
        """A database at our version whose tables differ (a pre-release build wrote it, or a
        hand edit) would fail writes one RPC at a time; it stops start-up instead."""
        found = _columns(self._conn)
        for table, columns in _expected_columns().items():
            if found.get(table) != columns:
                raise SchemaError(
                    f"{self.path}: table {table} has columns {found.get(table)}, schema version "
                    f"{SCHEMA_VERSION} has {columns}; this criruntime did not write it: move "
                    f"the root dir aside"
                )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

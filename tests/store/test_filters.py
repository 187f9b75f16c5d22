"""Store filters: ID prefixes in SQL, label selectors on the config alone."""

from __future__ import annotations

import sqlite3

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.store.filters import Where, with_labels


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, state TEXT, config BLOB)")
    for id_, state, labels in (
        ("aa1", "READY", {"app": "x", "pod": "1"}),
        ("aa2", "NOTREADY", {"app": "x", "pod": "2"}),
        ("ab3", "READY", {"app": "y"}),
    ):
        config = api.PodSandboxConfig(labels=labels).SerializeToString()
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", (id_, state, config))
    return conn


def _ids(conn: sqlite3.Connection, where: Where, selector: dict[str, str]) -> list[str]:
    rows = conn.execute(f"SELECT * FROM t{where.sql()} ORDER BY id", where.params).fetchall()
    labels = lambda blob: api.PodSandboxConfig.FromString(blob).labels  # noqa: E731
    return [row["id"] for row in with_labels(rows, labels, selector)]


def test_prefix_state_and_labels_combine() -> None:
    conn = _db()
    assert _ids(conn, Where(), {}) == ["aa1", "aa2", "ab3"]
    assert _ids(conn, Where().prefix("id", "aa"), {}) == ["aa1", "aa2"]
    assert _ids(conn, Where().prefix("id", ""), {}) == ["aa1", "aa2", "ab3"]  # no prefix: all
    assert _ids(conn, Where().prefix("id", "aa").equals("state", "READY"), {}) == ["aa1"]
    assert _ids(conn, Where(), {"app": "x"}) == ["aa1", "aa2"]
    assert _ids(conn, Where(), {"app": "x", "pod": "2"}) == ["aa2"]
    assert _ids(conn, Where().prefix("id", "ab"), {"app": "x"}) == []
    assert _ids(conn, Where(), {"missing": ""}) == []  # absent is not the empty value

"""The sqlite store: WAL, foreign keys, versioned forward migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from criruntime.store import db as db_module
from criruntime.store.db import SCHEMA_VERSION, Database, SchemaError, SchemaTooNew
from criruntime.store.schema import MIGRATIONS
from criruntime.store.settings import SettingsStore


def test_new_database_is_wal_and_fully_migrated(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "c.db"))
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"
    assert db.query("PRAGMA foreign_keys")[0][0] == 1
    assert db.schema_version == SCHEMA_VERSION
    tables = {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"settings", "pods", "containers", "images", "image_names"} <= tables
    db.close()


def test_migrations_run_forward_from_an_older_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "c.db")
    Database(path).close()
    extra = "CREATE TABLE added_later (x INTEGER)"
    monkeypatch.setattr(db_module, "MIGRATIONS", [*MIGRATIONS, extra])
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    db = Database(path)
    assert db.schema_version == SCHEMA_VERSION + 1
    assert db.query("SELECT count(*) FROM added_later")[0][0] == 0
    db.close()


def test_database_from_a_newer_criruntime_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer than this criruntime"):
        Database(path)


def test_database_whose_tables_differ_from_its_version_is_refused(tmp_path: Path) -> None:
    # As a pre-release build left one on a dev machine: version 1, but containers lacks a
    # column; it used to start and fail every CreateContainer with INTERNAL.
    path = str(tmp_path / "c.db")
    Database(path).close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE containers DROP COLUMN runtime")
    conn.close()
    with pytest.raises(SchemaError, match=r"table containers has columns \[.*\], schema version"):
        Database(path)


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "c.db"))
    settings = SettingsStore(db)
    settings.set("a", "1")
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("UPDATE settings SET value = '2' WHERE key = 'a'")
        raise RuntimeError("boom")
    assert settings.get("a") == "1"
    settings.set("a", "3")
    assert settings.get("a") == "3"
    assert settings.get("missing", "dflt") == "dflt"
    db.close()


def test_settings_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    db = Database(path)
    SettingsStore(db).set("pod_cidr", "10.88.0.0/16")
    db.close()
    assert SettingsStore(Database(path)).get("pod_cidr") == "10.88.0.0/16"

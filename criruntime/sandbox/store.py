"""SandboxStore: pods in the sqlite `pods` table, the single source of truth.

Lifecycle code reads and writes PodSandbox objects; SQL stays in this file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import AlreadyExists, InvalidArgument, NotFound
from criruntime.sandbox.model import PodSandbox, SandboxState
from criruntime.store.db import Database
from criruntime.store.filters import Where, with_labels


def _labels(config: bytes) -> Mapping[str, str]:
    return api.PodSandboxConfig.FromString(config).labels


def _serialize_config(sandbox: PodSandbox) -> bytes:
    return sandbox.config.SerializeToString(deterministic=True)


def _from_row(row: sqlite3.Row) -> PodSandbox:
    return PodSandbox.from_row(
        id=row["id"],
        state=row["state"],
        created_at=row["created_at"],
        config=row["config"],
        runtime=row["runtime"],
        data=json.loads(row["data"]),
    )


class SandboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, id_or_prefix: str) -> PodSandbox:
        """A sandbox by full ID or unique ID prefix (as crictl accepts); NotFound otherwise."""
        if not id_or_prefix:
            raise InvalidArgument("pod sandbox ID must not be empty")
        where = Where().prefix("id", id_or_prefix)
        rows = self._db.query(f"SELECT * FROM pods{where.sql()} LIMIT 2", tuple(where.params))
        if not rows:
            raise NotFound(f"pod sandbox {id_or_prefix!r} not found")
        exact = [r for r in rows if r["id"] == id_or_prefix]
        if len(rows) > 1 and not exact:
            raise InvalidArgument(f"pod sandbox ID prefix {id_or_prefix!r} is ambiguous")
        return _from_row(exact[0] if exact else rows[0])

    def find(self, id_or_prefix: str) -> PodSandbox | None:
        try:
            return self.get(id_or_prefix)
        except NotFound:
            return None

    def get_by_name_key(self, key: str) -> PodSandbox | None:
        rows = self._db.query("SELECT * FROM pods WHERE name_key = ?", (key,))
        return _from_row(rows[0]) if rows else None

    def list(
        self,
        state: SandboxState | None = None,
        *,
        id_prefix: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> list[PodSandbox]:
        """Pods, oldest first; the filters are applied before rows are parsed."""
        where = Where().prefix("id", id_prefix)
        if state is not None:
            where.equals("state", state.value)
        rows = self._db.query(
            f"SELECT * FROM pods{where.sql()} ORDER BY created_at", tuple(where.params)
        )
        return [_from_row(r) for r in with_labels(rows, _labels, labels or {})]

    def add(self, sandbox: PodSandbox) -> None:
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO pods (id, name_key, state, created_at, config, runtime, data)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        sandbox.id,
                        sandbox.name_key,
                        sandbox.state.value,
                        sandbox.created_at,
                        _serialize_config(sandbox),
                        sandbox.runtime_handler,
                        json.dumps(sandbox.data()),
                    ),
                )
        except sqlite3.IntegrityError:
            holder = self.get_by_name_key(sandbox.name_key)
            raise AlreadyExists(
                f"pod sandbox name {sandbox.name_key!r} is already used by "
                f"{holder.id if holder else 'another sandbox'}"
            ) from None

    def update(self, sandbox: PodSandbox) -> None:
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE pods SET state = ?, config = ?, data = ? WHERE id = ?",
                (
                    sandbox.state.value,
                    _serialize_config(sandbox),
                    json.dumps(sandbox.data()),
                    sandbox.id,
                ),
            )
            if cur.rowcount == 0:
                raise NotFound(f"pod sandbox {sandbox.id!r} not found")

    def delete(self, sandbox_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM pods WHERE id = ?", (sandbox_id,))

    def count_by_state(self) -> dict[str, int]:
        """How many rows are in each state (for the metrics endpoint)."""
        rows = self._db.query("SELECT state, COUNT(*) AS n FROM pods GROUP BY state")
        return {str(r["state"]).lower(): int(r["n"]) for r in rows}

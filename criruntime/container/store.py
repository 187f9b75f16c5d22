"""ContainerStore: containers in the sqlite `containers` table, the single source of truth.

Lifecycle code reads and writes Container objects; SQL stays in this file. The table's UNIQUE
name_key is what makes a name clash an AlreadyExists, even across daemon restarts.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import Container, ContainerState
from criruntime.errors import AlreadyExists, InvalidArgument, NotFound
from criruntime.store.db import Database
from criruntime.store.filters import Where, with_labels


def _labels(config: bytes) -> Mapping[str, str]:
    return api.ContainerConfig.FromString(config).labels


def _from_row(row: sqlite3.Row) -> Container:
    return Container.from_row(
        id=row["id"],
        pod_id=row["pod_id"],
        name_key=row["name_key"],
        state=row["state"],
        created_at=row["created_at"],
        config=row["config"],
        image_id=row["image_id"],
        runtime=row["runtime"],
        data=json.loads(row["data"]),
    )


# Told of every write once it is committed: (id, the container written, or None once deleted).
ChangeHook = Callable[[str, Container | None], None]


class ContainerStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.on_change: ChangeHook | None = None

    def get(self, id_or_prefix: str) -> Container:
        """A container by full ID or unique ID prefix (as crictl accepts); NotFound otherwise."""
        if not id_or_prefix:
            raise InvalidArgument("container ID must not be empty")
        where = Where().prefix("id", id_or_prefix)
        rows = self._db.query(f"SELECT * FROM containers{where.sql()} LIMIT 2", tuple(where.params))
        exact = [r for r in rows if r["id"] == id_or_prefix]
        if not rows:
            raise NotFound(f"container {id_or_prefix!r} not found")
        if len(rows) > 1 and not exact:
            raise InvalidArgument(f"container ID prefix {id_or_prefix!r} is ambiguous")
        return _from_row(exact[0] if exact else rows[0])

    def find(self, id_or_prefix: str) -> Container | None:
        try:
            return self.get(id_or_prefix)
        except NotFound:
            return None

    def list(
        self,
        pod_id: str | None = None,
        *,
        id_prefix: str = "",
        pod_prefix: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> list[Container]:
        """Containers, oldest first; the filters are applied before rows are parsed."""
        where = Where().prefix("id", id_prefix).prefix("pod_id", pod_prefix)
        if pod_id is not None:
            where.equals("pod_id", pod_id)
        rows = self._db.query(
            f"SELECT * FROM containers{where.sql()} ORDER BY created_at", tuple(where.params)
        )
        return [_from_row(r) for r in with_labels(rows, _labels, labels or {})]

    def add(self, container: Container, layer_chain_ids: Sequence[str] = ()) -> None:
        """Reserves the name: a second container with the same name_key is AlreadyExists.
        Its image layers are leased in the same transaction, so image GC keeps them even if
        the image is removed while the container exists."""
        try:
            with self._db.transaction() as conn:
                conn.executemany(
                    "INSERT OR IGNORE INTO layer_leases (owner, chain_id) VALUES (?, ?)",
                    [(container.id, chain_id) for chain_id in layer_chain_ids],
                )
                conn.execute(
                    "INSERT INTO containers (id, pod_id, name_key, state, created_at, config,"
                    " image_id, runtime, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        container.id,
                        container.pod_id,
                        container.name_key,
                        container.state.value,
                        container.created_at,
                        container.config.SerializeToString(deterministic=True),
                        container.image_id,
                        container.runtime_handler,
                        json.dumps(container.data()),
                    ),
                )
        except sqlite3.IntegrityError as e:
            if "name_key" in str(e):
                holder = self._db.query(
                    "SELECT id FROM containers WHERE name_key = ?", (container.name_key,)
                )
                held_by = holder[0]["id"] if holder else "another container"
                raise AlreadyExists(
                    f"container name {container.name_key!r} is reserved by {held_by}"
                ) from None
            if "FOREIGN KEY" in str(e):
                raise NotFound(f"pod sandbox {container.pod_id!r} not found") from None
            raise
        if self.on_change is not None:
            self.on_change(container.id, container)

    def update(self, container: Container) -> None:
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE containers SET state = ?, config = ?, data = ? WHERE id = ?",
                (
                    container.state.value,
                    container.config.SerializeToString(deterministic=True),
                    json.dumps(container.data()),
                    container.id,
                ),
            )
            if cur.rowcount == 0:
                raise NotFound(f"container {container.id!r} not found")
        if self.on_change is not None:
            self.on_change(container.id, container)

    def delete(self, container_id: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (container_id,))
            conn.execute("DELETE FROM layer_leases WHERE owner = ?", (container_id,))
        if self.on_change is not None:
            self.on_change(container_id, None)

    def states(self) -> builtins.list[tuple[str, str, ContainerState]]:
        """(id, pod id, state) of every container, without parsing configs."""
        rows = self._db.query("SELECT id, pod_id, state FROM containers")
        return [(r["id"], r["pod_id"], ContainerState(r["state"])) for r in rows]

    def in_state(self, state: ContainerState) -> builtins.list[Container]:
        rows = self._db.query(
            "SELECT * FROM containers WHERE state = ? ORDER BY created_at", (state.value,)
        )
        return [_from_row(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        """How many rows are in each state (for the metrics endpoint)."""
        rows = self._db.query("SELECT state, COUNT(*) AS n FROM containers GROUP BY state")
        return {str(r["state"]).lower(): int(r["n"]) for r in rows}

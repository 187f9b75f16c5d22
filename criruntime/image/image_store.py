"""Image metadata in sqlite: the `images` and `image_names` tables, read fresh on every call.

No in-memory copy: `criruntime images import` writes the same database while the daemon runs,
so the database is the only place an answer may come from.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from criruntime.errors import InvalidArgument
from criruntime.image import reference
from criruntime.store.db import Database

_HEX_PREFIX = re.compile(r"(?:sha256:)?([a-f0-9]{4,64})")


@dataclass(frozen=True)
class ImageRecord:
    id: str  # config digest
    manifest_digest: str  # the platform manifest (not the index)
    size: int  # manifest + config + compressed layers, as containerd reports it
    created_at: int  # unix nanoseconds when first stored
    config: dict[str, Any]
    manifest: dict[str, Any]
    chain_ids: list[str]
    blobs: list[str]  # every blob this image keeps alive: index, manifest, config, layers
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)

    @property
    def user(self) -> str:
        return str((self.config.get("config") or {}).get("User") or "")

    def data_json(self) -> str:
        return json.dumps(
            {
                "config": self.config,
                "manifest": self.manifest,
                "chain_ids": self.chain_ids,
                "blobs": self.blobs,
            },
            sort_keys=True,
        )


def _record(row: sqlite3.Row, names: list[str]) -> ImageRecord:
    data = json.loads(row["data"])
    return ImageRecord(
        id=row["id"],
        manifest_digest=row["manifest_digest"],
        size=int(row["size"]),
        created_at=int(row["created_at"]),
        config=data["config"],
        manifest=data["manifest"],
        chain_ids=list(data["chain_ids"]),
        blobs=list(data["blobs"]),
        repo_tags=sorted(n for n in names if "@" not in n),
        repo_digests=sorted(n for n in names if "@" in n),
    )


class ImageStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _names(self, image_id: str) -> list[str]:
        rows = self._db.query("SELECT name FROM image_names WHERE image_id = ?", (image_id,))
        return [str(r["name"]) for r in rows]

    def get(self, image_id: str) -> ImageRecord | None:
        rows = self._db.query("SELECT * FROM images WHERE id = ?", (image_id,))
        return _record(rows[0], self._names(image_id)) if rows else None

    def all(self) -> list[ImageRecord]:
        names: dict[str, list[str]] = {}
        for r in self._db.query("SELECT name, image_id FROM image_names"):
            names.setdefault(str(r["image_id"]), []).append(str(r["name"]))
        rows = self._db.query("SELECT * FROM images ORDER BY created_at, id")
        return [_record(r, names.get(str(r["id"]), [])) for r in rows]

    def resolve(self, text: str) -> ImageRecord | None:
        """By name (any tag or digest, normalised), by full ID, or by a unique ID prefix.

        Names win over ID prefixes, as in containerd; anything unresolvable is None.
        """
        try:
            ref = reference.parse(text)
        except InvalidArgument:
            ref = None
        if ref is not None:
            rows = self._db.query("SELECT image_id FROM image_names WHERE name = ?", (str(ref),))
            if rows:
                return self.get(str(rows[0]["image_id"]))
        match = _HEX_PREFIX.fullmatch(text)
        if match is None:
            return None
        rows = self._db.query(
            "SELECT id FROM images WHERE id >= ? AND id < ? LIMIT 2",
            (f"sha256:{match[1]}", f"sha256:{match[1]}g"),
        )
        return self.get(str(rows[0]["id"])) if len(rows) == 1 else None

    def add(self, record: ImageRecord, names: list[str]) -> None:
        """Stores the image and points `names` at it (a tag moves off any older image)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO images(id, manifest_digest, size, created_at, data) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "manifest_digest = excluded.manifest_digest, size = excluded.size, "
                "data = excluded.data",
                (
                    record.id,
                    record.manifest_digest,
                    record.size,
                    record.created_at or time.time_ns(),
                    record.data_json(),
                ),
            )
            for name in names:
                conn.execute(
                    "INSERT INTO image_names(name, image_id) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
                    (name, record.id),
                )

    def remove(self, image_id: str) -> bool:
        """Deletes the image and every name of it; False if it was already gone."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM image_names WHERE image_id = ?", (image_id,))
            return conn.execute("DELETE FROM images WHERE id = ?", (image_id,)).rowcount > 0

    def volume_users(self, image_id: str) -> list[str]:
        """IDs of the containers that mount the image as an image volume (KEP-4639)."""
        rows = self._db.query(
            "SELECT c.id FROM containers AS c, json_each(c.data, '$.image_volumes') AS v "
            "WHERE v.value = ? ORDER BY c.created_at",
            (image_id,),
        )
        return [str(r["id"]) for r in rows]

    def volume_images(self) -> set[str]:
        """IDs of every image some container mounts as an image volume."""
        rows = self._db.query(
            "SELECT DISTINCT v.value AS id FROM containers AS c, "
            "json_each(c.data, '$.image_volumes') AS v"
        )
        return {str(r["id"]) for r in rows}

    def referenced(self) -> tuple[set[str], set[str]]:
        """(blob digests, chain IDs) that images and containers keep alive."""
        blobs: set[str] = set()
        chains: set[str] = set()
        for row in self._db.query("SELECT data FROM images"):
            data = json.loads(row["data"])
            blobs.update(data["blobs"])
            chains.update(data["chain_ids"])
        for row in self._db.query("SELECT chain_id FROM layer_leases"):
            chains.add(str(row["chain_id"]))
        return blobs, chains

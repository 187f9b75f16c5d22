"""`criruntime images import FILE` and `criruntime images ls`: offline, safe while the daemon
runs (same sqlite database in WAL mode; the store lock keeps the daemon's GC away)."""

from __future__ import annotations

import asyncio
import os

from criruntime.config import Config
from criruntime.image.image_import import import_archive
from criruntime.image.image_store import ImageRecord, ImageStore
from criruntime.image.service import ImageService
from criruntime.store.db import Database


def _db(config: Config) -> Database:
    os.makedirs(config.root, mode=0o711, exist_ok=True)
    return Database(os.path.join(config.root, "criruntime.db"))


def import_image(config: Config, path: str) -> list[str]:
    """Imports an OCI image layout or docker-archive tarball; returns the image IDs."""
    db = _db(config)

    async def run() -> list[str]:
        svc = ImageService(config, db)
        try:
            return await import_archive(svc, path)
        finally:
            await svc.close()

    try:
        return asyncio.run(run())
    finally:
        db.close()


def list_images(config: Config) -> list[ImageRecord]:
    db = _db(config)
    try:
        return ImageStore(db).all()
    finally:
        db.close()


def format_images(records: list[ImageRecord]) -> str:
    """A crictl-like table: IMAGE TAG IMAGE-ID SIZE."""
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for r in records:
        short = r.id.removeprefix("sha256:")[:13]
        size = f"{r.size / 1e6:.1f}MB"
        tags = r.repo_tags or [f"{d.split('@')[0]}:<none>" for d in r.repo_digests[:1]]
        for tag in tags or ["<none>:<none>"]:
            repo, _, name = tag.rpartition(":")
            rows.append((repo, name, short, size))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )

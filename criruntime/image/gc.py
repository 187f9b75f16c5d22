"""Garbage collection of blobs and layers no image or container references.

Pulls and imports may run in the daemon and in `criruntime images import` at once, so the
store is guarded by flock(2) on images/gc.lock: every pull holds it shared from its first
download until its image row is committed; GC takes it exclusive, without waiting, and simply
skips a round while anything is pulling (the next round collects what this one left).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from criruntime.image.content_store import ContentStore
from criruntime.image.image_store import ImageStore
from criruntime.image.layer_store import LayerStore

log = logging.getLogger("criruntime.image.gc")


@dataclass(frozen=True)
class GcResult:
    ran: bool
    blobs_removed: int = 0
    layers_removed: int = 0


class StoreLock:
    def __init__(self, images_root: str) -> None:
        self.path = os.path.join(images_root, "gc.lock")

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Held by a pull: GC cannot delete anything while it is held."""
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                # GC is running (briefly); wait for it off the event loop.
                await asyncio.get_running_loop().run_in_executor(
                    None, fcntl.flock, fd, fcntl.LOCK_SH
                )
            yield
        finally:
            os.close(fd)  # closing the fd releases the lock

    @contextlib.contextmanager
    def shared_blocking(self) -> Iterator[None]:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def try_exclusive(self) -> Iterator[bool]:
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def collect(
    lock: StoreLock, images: ImageStore, content: ContentStore, layers: LayerStore
) -> GcResult:
    """One GC round; blocking (rmtree), so the daemon runs it in an executor."""
    with lock.try_exclusive() as got:
        if not got:
            return GcResult(ran=False)
        # Leftovers of a crash first: nobody is pulling, so every temp file is abandoned.
        content.clear_ingest()
        layers.clear_temporary()
        blobs, chains = images.referenced()
        blobs_removed = layers_removed = 0
        for digest in list(content.digests()):
            if digest not in blobs:
                content.delete(digest)
                blobs_removed += 1
        for chain_id in list(layers.chain_ids()):
            if chain_id not in chains:
                layers.remove(chain_id)
                layers_removed += 1
        for name in os.listdir(layers.links_dir):
            link = os.path.join(layers.links_dir, name)
            if not os.path.exists(link):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)
    if blobs_removed or layers_removed:
        log.info("image GC removed %d blobs and %d layers", blobs_removed, layers_removed)
    return GcResult(ran=True, blobs_removed=blobs_removed, layers_removed=layers_removed)

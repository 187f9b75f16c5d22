"""ImageService: wires the content store, layer store, registry client and image metadata
into the CRI image verbs (one module per verb). No image metadata is cached here; see
image_store.py for why."""

from __future__ import annotations

import asyncio
import logging
import os

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.config import Config
from criruntime.image import gc, image_fs_info, image_list, image_pull, image_remove, image_status
from criruntime.image.content_store import ContentStore
from criruntime.image.image_store import ImageStore
from criruntime.image.layer_store import LayerStore
from criruntime.image.registry import RegistryClient, RegistryOptions
from criruntime.image.single_flight import SingleFlight
from criruntime.store.db import Database

log = logging.getLogger("criruntime.image")


def images_root(config: Config) -> str:
    return os.path.join(config.root, "images")


class ImageService:
    def __init__(
        self, config: Config, db: Database, registry: RegistryOptions | None = None
    ) -> None:
        self.config = config
        self.root = images_root(config)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.content = ContentStore(self.root)
        self.layers = LayerStore(self.root)
        self.images = ImageStore(db)
        self.lock = gc.StoreLock(self.root)
        options = registry or RegistryOptions.from_config(config)
        self.registry = RegistryClient(options)
        self.pulls: SingleFlight[str] = SingleFlight()
        self.blobs: SingleFlight[str] = SingleFlight()
        self.unpacks: SingleFlight[None] = SingleFlight()
        self.download_slots = asyncio.Semaphore(options.max_concurrent_downloads)
        # Unpacking is mostly Python (tarfile) under the GIL: more threads than cores buy nothing.
        self.unpack_slots = asyncio.Semaphore(max(2, min(4, os.cpu_count() or 2)))
        self._gc_lock = asyncio.Lock()
        # Leftovers of a crash (kill -9 mid-pull) go now, unless an import is running.
        gc.collect(self.lock, self.images, self.content, self.layers)

    async def close(self) -> None:
        await self.registry.close()

    async def pull_image(self, request: api.PullImageRequest) -> api.PullImageResponse:
        return await image_pull.pull_image(self, request)

    async def list_images(self, request: api.ListImagesRequest) -> api.ListImagesResponse:
        return await image_list.list_images(self, request)

    async def image_status(self, request: api.ImageStatusRequest) -> api.ImageStatusResponse:
        return await image_status.image_status(self, request)

    async def remove_image(self, request: api.RemoveImageRequest) -> api.RemoveImageResponse:
        return await image_remove.remove_image(self, request)

    async def image_fs_info(self, request: api.ImageFsInfoRequest) -> api.ImageFsInfoResponse:
        return await image_fs_info.image_fs_info(self)

    async def collect_garbage(self) -> gc.GcResult:
        """One GC round off the event loop; skipped (ran=False) while anything is pulling."""
        async with self._gc_lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                None, gc.collect, self.lock, self.images, self.content, self.layers
            )

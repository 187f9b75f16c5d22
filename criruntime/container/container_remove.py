"""RemoveContainer: kill if running, delete from the runtime, unmount, drop files and row.

Idempotent: an unknown container is success. The log file stays for kubelet to collect.
"""

from __future__ import annotations

import asyncio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import rootfs
from criruntime.container.container_stop import stop
from criruntime.container.model import Container
from criruntime.container.service import ContainerService
from criruntime.errors import NotFound
from criruntime.oci.runtime import BundlePaths


async def teardown(svc: ContainerService, container: Container) -> None:
    """Everything but the row: runtime state, rootfs mount, bundle and upper/work dirs."""
    runtime = svc.runtime_for(container.runtime_handler)
    await runtime.delete(container.id, force=True)
    loop = asyncio.get_running_loop()
    if container.bundle_dir:
        await loop.run_in_executor(None, rootfs.unmount, BundlePaths(container.bundle_dir).rootfs)
    dirs = [d for d in (container.bundle_dir, container.storage_dir) if d]
    await loop.run_in_executor(None, rootfs.remove_dirs, *dirs)


async def remove(svc: ContainerService, container_id: str) -> None:
    await stop(svc, container_id, 0)
    async with svc.locked(container_id):
        try:
            container = svc.store.get(container_id)
        except NotFound:
            return
        await teardown(svc, container)
        svc.store.delete(container.id)
    svc.forget_lock(container_id)


async def remove_container(
    svc: ContainerService, request: api.RemoveContainerRequest
) -> api.RemoveContainerResponse:
    await svc.ensure_recovered()
    try:
        container = svc.store.get(request.container_id)
    except NotFound:
        return api.RemoveContainerResponse()
    await remove(svc, container.id)
    return api.RemoveContainerResponse()

"""RemoveContainer: kill if running, reap (runtime delete, unmount) unless the exit path already
did, drop the row, then the bundle and upper/work dirs.

The row goes before the files: the container is gone from List the moment Remove returns, and
a daemon killed in between leaves only directories without a row, which recovery removes.
The dirs are not deleted while Remove waits: each is renamed into its filesystem's trash and
deleted there in the background (ContainerService.discard_dirs; shutdown waits for it, recovery
empties a trash a killed daemon left).
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


def _dirs(container: Container) -> list[str]:
    return [d for d in (container.bundle_dir, container.storage_dir) if d]


async def teardown(svc: ContainerService, container: Container) -> None:
    """Everything but the row: runtime state, rootfs mount, bundle and upper/work dirs."""
    await svc.reap_now(container)
    await asyncio.get_running_loop().run_in_executor(None, rootfs.remove_dirs, *_dirs(container))


async def remove(svc: ContainerService, container_id: str) -> None:
    await stop(svc, container_id, 0)
    async with svc.locked(container_id):
        try:
            container = svc.store.get(container_id)
        except NotFound:
            return
        await svc.reap_now(container)  # the rootfs is unmounted before its layers' lease goes
        svc.store.delete(container.id)
        svc.discard_dirs(container)
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

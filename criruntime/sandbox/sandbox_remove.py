"""RemovePodSandbox: stop first if needed, then remove containers, cgroup, files and row.

Idempotent: removing an unknown pod succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from criruntime.errors import NotFound
from criruntime.sandbox.model import PodSandbox
from criruntime.sandbox.sandbox_stop import CONTAINER_STOP_TIMEOUT, release_namespaces, stop_locked
from criruntime.sandbox.service import SandboxService

log = logging.getLogger("criruntime.sandbox")


async def remove_pod_sandbox(svc: SandboxService, sandbox_id: str) -> None:
    await svc.ensure_recovered()
    try:
        sandbox = svc.store.get(sandbox_id)
    except NotFound:
        return
    async with svc.locked(sandbox.id):
        current = svc.store.find(sandbox.id)
        if current is None:
            return
        await remove_locked(svc, current)
    svc.forget_lock(sandbox.id)


async def remove_locked(svc: SandboxService, sandbox: PodSandbox) -> None:
    if sandbox.ready or sandbox.network_name:
        sandbox = await stop_locked(svc, sandbox)
    if svc.remove_containers is not None:
        await svc.remove_containers(sandbox.id, CONTAINER_STOP_TIMEOUT)
    # Stop released these already; again in case the pod never got that far (idempotent).
    await asyncio.to_thread(release_namespaces, sandbox)
    if sandbox.cgroup_owned_from:
        await asyncio.to_thread(
            svc.cgroupfs.remove, sandbox.cgroup_parent, sandbox.cgroup_owned_from
        )
    await asyncio.to_thread(shutil.rmtree, svc.bundle_dir(sandbox.id), True)
    svc.store.delete(sandbox.id)
    log.info("pod %s removed", sandbox.id[:12])

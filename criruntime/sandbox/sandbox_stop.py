"""StopPodSandbox: stop the pod's containers, tear down its network, release its namespaces.

Idempotent: stopping a stopped pod succeeds, and every step tolerates "already done", so a
retry after a failed step finishes the job. The pod keeps its files, cgroup and row until
RemovePodSandbox.
"""

from __future__ import annotations

import asyncio
import logging

from criruntime.errors import NotFound
from criruntime.observability import metrics
from criruntime.sandbox import namespaces
from criruntime.sandbox.model import PodSandbox, SandboxState
from criruntime.sandbox.service import SandboxService

log = logging.getLogger("criruntime.sandbox")

# kubelet has already stopped each container with its own grace period before it stops the
# pod; what is left is killed at once, as containerd does.
CONTAINER_STOP_TIMEOUT = 0.0


@metrics.timed("sandbox_stop")
async def stop_pod_sandbox(svc: SandboxService, sandbox_id: str) -> None:
    await svc.ensure_recovered()
    try:
        sandbox = svc.store.get(sandbox_id)
    except NotFound:
        # kubelet may retry a stop for a pod already removed; CRI says that is fine.
        return
    async with svc.locked(sandbox.id):
        current = svc.store.find(sandbox.id)
        if current is None:
            return  # removed while this call waited for the lock: stopped all the same
        await stop_locked(svc, current)


async def stop_locked(svc: SandboxService, sandbox: PodSandbox) -> PodSandbox:
    if svc.stop_containers is not None:
        await svc.stop_containers(sandbox.id, CONTAINER_STOP_TIMEOUT)
    if sandbox.network_name:
        # Torn down even if the netns is already gone, so IPAM and host rules are released.
        await svc.network.teardown(
            sandbox.id, sandbox.netns_path, sandbox.config, sandbox.network_name
        )
        sandbox = sandbox.replace(network_name="")
        svc.store.update(sandbox)
    await asyncio.to_thread(release_namespaces, sandbox)
    sandbox = sandbox.replace(state=SandboxState.NOTREADY, pid_init_pid=0)
    svc.store.update(sandbox)
    log.info("pod %s stopped", sandbox.id[:12])
    return sandbox


def release_namespaces(sandbox: PodSandbox) -> None:
    namespaces.stop_init(sandbox.pid_init_pid)
    for path in (sandbox.netns_path, sandbox.ipc_ns_path, sandbox.uts_ns_path, sandbox.pid_ns_path):
        namespaces.unpin(path or "")
    namespaces.unpin(sandbox.userns_path)
    namespaces.unmount_shm(sandbox.shm_path)

"""StopContainer: the stop signal, then SIGKILL once the timeout has passed. Idempotent."""

from __future__ import annotations

import logging
import signal

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService, exited
from criruntime.errors import DeadlineExceeded, NotFound
from criruntime.observability import metrics

log = logging.getLogger("criruntime.container")

# After SIGKILL the kernel needs a moment; longer means the process is stuck in D state.
KILL_WAIT = 30.0


async def stop(svc: ContainerService, container_id: str, grace: float) -> None:
    async with svc.locked(container_id):
        try:
            container = svc.get(container_id)
        except NotFound:
            return
        if container.state is not ContainerState.RUNNING:
            return
        runtime = svc.runtime_for(container.runtime_handler)
        status = None
        if grace > 0 and container.stop_signal != signal.SIGKILL:
            await runtime.kill(container.id, container.stop_signal)
            status = await runtime.wait_exit(container.bundle_dir, grace, container.pid)
        if status is None:
            await runtime.kill(container.id, signal.SIGKILL, all_processes=True)
            status = await runtime.wait_exit(container.bundle_dir, KILL_WAIT, container.pid)
        if status is None:
            raise DeadlineExceeded(f"container {container.id} did not exit after SIGKILL")
        stopped = exited(container, status)
        svc.store.update(stopped)
        # As containerd deletes the task on its exit: RemoveContainer then only drops files.
        await svc.reap_now(stopped)
        log.info("stopped container %s (exit %d)", container.id[:12], status.code)


@metrics.timed("container_stop")
async def stop_container(
    svc: ContainerService, request: api.StopContainerRequest
) -> api.StopContainerResponse:
    await svc.ensure_recovered()
    try:
        container = svc.store.get(request.container_id)
    except NotFound:
        return api.StopContainerResponse()  # already gone: stopping is idempotent
    await stop(svc, container.id, float(max(request.timeout, 0)))
    return api.StopContainerResponse()

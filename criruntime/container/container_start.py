"""StartContainer: conmon runs `<runtime> create` on the bundle CreateContainer wrote, then
`<runtime> start`.

Atomic from the client's view, as in containerd: on success the container is RUNNING; if
anything fails, the half-made runtime container is force-deleted and the container is EXITED
with exit code 128, reason "StartError" and the error as message (containerd's
errorStartExitCode / errorStartReason), never started_at. A start cut short by a daemon kill
leaves the row CREATED; recovery (restart.py) deletes the runtime container it may have left,
so the container can be started again, as containerd does with a created-but-unstarted task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from criruntime import failpoints
from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import attempt
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService
from criruntime.errors import FailedPrecondition
from criruntime.observability import metrics
from criruntime.oci.runtime import BundlePaths, OciRuntime

log = logging.getLogger("criruntime.container")

START_ERROR_EXIT_CODE = 128
START_ERROR_REASON = "StartError"


async def discard_attempt(runtime: OciRuntime, container_id: str, bundle: str) -> None:
    """Undoes a start that did not finish: the runtime container (its init is killed), then,
    once conmon has recorded that and gone, conmon's files in the bundle. Marked first, so a
    daemon killed half-way finishes the undo on restart rather than reading the kill's exit
    code (137) as the container's."""
    attempt.mark_discarding(bundle)
    await runtime.delete(container_id, force=True)
    await runtime.wait_exit(bundle, 5.0)
    await failpoints.pause(failpoints.DISCARD_AFTER_DELETE)
    attempt.drop_exit(BundlePaths(bundle).exit_file)
    runtime.reset_bundle(bundle)


def attempted(bundle: str) -> bool:
    """conmon was started on this bundle before."""
    return os.path.exists(BundlePaths(bundle).conmon_pid)


@metrics.timed("container_start")
async def _start(svc: ContainerService, container_id: str) -> None:
    async with svc.locked(container_id):
        container = svc.get(container_id)
        if container.state is not ContainerState.CREATED:
            raise FailedPrecondition(
                f"container {container.id} is {container.state.value.lower()}, not created"
            )
        pod = await svc.pods(container.pod_id)
        if not pod.ready:
            # Its namespaces are gone: runc would fail on them in its own words.
            raise FailedPrecondition(
                f"container {container.id} cannot start: its pod sandbox {pod.id} is not ready"
            )
        runtime = svc.runtime_for(container.runtime_handler)
        bundle = container.bundle_dir
        if attempted(bundle) or runtime.has_state(container.id):
            # An earlier attempt was cut short (its caller went away): start from scratch.
            await discard_attempt(runtime, container.id, bundle)
        started_at = time.time_ns()  # taken first: a fast process may exit before start returns
        await failpoints.pause(failpoints.START_BEFORE_CREATE)
        try:
            config = container.config
            pid = await runtime.create(
                container.id,
                bundle,
                container.log_path or os.path.join(bundle, "container.log"),
                terminal=config.tty,
                stdin=config.stdin,
                stdin_once=config.stdin_once,
            )
            attempt.mark_started(bundle, started_at)
            await failpoints.pause(failpoints.START_AFTER_CREATE)
            await runtime.start(container.id, pid)
            await failpoints.pause(failpoints.START_AFTER_START)
        except Exception as e:
            log.warning("starting container %s failed: %s", container.id[:12], e)
            try:
                await runtime.delete(container.id, force=True)
            except Exception:
                log.exception("deleting container %s after a failed start", container.id[:12])
            svc.store.update(
                container.replace(
                    state=ContainerState.EXITED,
                    pid=0,
                    exit_code=START_ERROR_EXIT_CODE,
                    finished_at=time.time_ns(),
                    reason=START_ERROR_REASON,
                    message=str(e),
                )
            )
            raise
        svc.store.update(
            container.replace(state=ContainerState.RUNNING, pid=pid, started_at=started_at)
        )


async def start_container(
    svc: ContainerService, request: api.StartContainerRequest
) -> api.StartContainerResponse:
    await svc.ensure_recovered()
    container = svc.get(request.container_id)
    # Shielded: a client that gives up mid-way must not leave a started container recorded as
    # created, so the start runs to its end and records what happened.
    await asyncio.shield(asyncio.ensure_future(_start(svc, container.id)))
    return api.StartContainerResponse()

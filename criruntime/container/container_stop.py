"""StopContainer: the stop signal, then SIGKILL once the timeout has passed. Idempotent.

As in containerd, the grace period is not spent holding the container's lock: one stop per
container is in flight at a time, and a later StopContainer (or RemoveContainer, or
StopPodSandbox, which stop with timeout 0) whose deadline comes sooner moves the SIGKILL
forward and waits for the same outcome. A later, longer timeout never extends it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time

from criruntime import failpoints
from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService, PendingStop, exited
from criruntime.errors import DeadlineExceeded, NotFound
from criruntime.observability import metrics
from criruntime.oci.runtime import ExitStatus, OciRuntime

log = logging.getLogger("criruntime.container")

# After SIGKILL the kernel needs a moment; longer means the process is stuck in D state.
KILL_WAIT = 30.0


async def stop(svc: ContainerService, container_id: str, grace: float) -> None:
    grace = max(grace, 0.0)
    inflight = svc.stops.get(container_id)
    if inflight is None:
        # No deadline until the stop signal is out: the grace period counts from there.
        inflight = PendingStop(math.inf)
        inflight.task = asyncio.get_running_loop().create_task(
            _stop(svc, container_id, inflight, grace)
        )
        svc.stops[container_id] = inflight
        inflight.task.add_done_callback(lambda _: _forget(svc, container_id, inflight))
    else:
        inflight.shorten(time.monotonic() + grace)
    assert inflight.task is not None
    # Shielded: a caller that gives up does not cancel the stop others wait for.
    await asyncio.shield(inflight.task)


def _forget(svc: ContainerService, container_id: str, inflight: PendingStop) -> None:
    if svc.stops.get(container_id) is inflight:
        del svc.stops[container_id]


async def _stop(
    svc: ContainerService, container_id: str, inflight: PendingStop, grace: float
) -> None:
    async with svc.locked(container_id):
        try:
            container = svc.get(container_id)
        except NotFound:
            return
        if container.state is not ContainerState.RUNNING:
            return
        runtime = svc.runtime_for(container.runtime_handler)
        # A stop that came meanwhile may already have moved the deadline; it never extends.
        if (
            grace > 0
            and inflight.deadline > time.monotonic()
            and container.stop_signal != signal.SIGKILL
        ):
            await runtime.kill(container.id, container.stop_signal)
            inflight.shorten(time.monotonic() + grace)
        else:
            inflight.shorten(time.monotonic())
    await failpoints.pause(failpoints.STOP_AFTER_SIGNAL)
    # The grace period, unlocked: status, a shorter stop or a remove may come meanwhile.
    status = await _wait_until_deadline(runtime, container.bundle_dir, container.pid, inflight)
    if status is None:
        await runtime.kill(container.id, signal.SIGKILL, all_processes=True)
        status = await runtime.wait_exit(container.bundle_dir, KILL_WAIT, container.pid)
    if status is None:
        raise DeadlineExceeded(f"container {container.id} did not exit after SIGKILL")
    async with svc.locked(container_id):
        try:
            current = svc.store.get(container_id)
        except NotFound:
            return
        if current.state is ContainerState.RUNNING:
            stopped = exited(current, status)
            svc.store.update(stopped)
        else:
            stopped = current  # a status call recorded the exit first
        # As containerd deletes the task on its exit: RemoveContainer then only drops files.
        await svc.reap_now(stopped)
    log.info("stopped container %s (exit %d)", container.id[:12], status.code)


async def _wait_until_deadline(
    runtime: OciRuntime, bundle: str, pid: int, inflight: PendingStop
) -> ExitStatus | None:
    """The exit status if the container exits before the (movable) deadline, else None."""
    exit_wait = asyncio.ensure_future(runtime.wait_exit(bundle, None, pid))
    try:
        while True:
            remaining = inflight.deadline - time.monotonic()
            if remaining <= 0:
                return None
            inflight.moved.clear()
            moved = asyncio.ensure_future(inflight.moved.wait())
            done, _ = await asyncio.wait(
                {exit_wait, moved}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            moved.cancel()
            if exit_wait in done:
                return exit_wait.result()
    finally:
        exit_wait.cancel()


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

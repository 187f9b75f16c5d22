"""StartContainer: `<runtime> start` on a created container."""

from __future__ import annotations

import time

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService
from criruntime.errors import CriError, FailedPrecondition


async def start_container(
    svc: ContainerService, request: api.StartContainerRequest
) -> api.StartContainerResponse:
    await svc.ensure_recovered()
    container = svc.get(request.container_id)
    async with svc.locked(container.id):
        container = svc.get(container.id)
        if container.state is not ContainerState.CREATED:
            raise FailedPrecondition(
                f"container {container.id} is {container.state.value.lower()}, not created"
            )
        runtime = svc.runtime_for(container.runtime_handler)
        started_at = time.time_ns()  # taken first: a fast process may exit before start returns
        try:
            await runtime.start(container.id)
        except CriError as e:
            svc.store.update(
                container.replace(
                    state=ContainerState.EXITED,
                    exit_code=128,
                    finished_at=time.time_ns(),
                    reason="StartError",
                    message=str(e),
                )
            )
            raise
        svc.store.update(container.replace(state=ContainerState.RUNNING, started_at=started_at))
    return api.StartContainerResponse()

"""UpdateContainerResources: `<runtime> update` on a live container, then store the new
resources so ContainerStatus reports them and a restart keeps them."""

from __future__ import annotations

import logging

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService
from criruntime.container.spec import clamp_oom_score_adj, resources_to_oci
from criruntime.errors import FailedPrecondition

log = logging.getLogger("criruntime.container")


async def update_container_resources(
    svc: ContainerService, request: api.UpdateContainerResourcesRequest
) -> api.UpdateContainerResourcesResponse:
    await svc.ensure_recovered()
    container = svc.get(request.container_id)
    async with svc.locked(container.id):
        container = svc.get(container.id)
        if container.state not in (ContainerState.CREATED, ContainerState.RUNNING):
            raise FailedPrecondition(
                f"container {container.id} is {container.state.value.lower()}; "
                "only created or running containers can be updated"
            )
        if not request.HasField("linux"):
            return api.UpdateContainerResourcesResponse()
        warnings: list[str] = []
        resources = resources_to_oci(request.linux, warnings)
        if request.linux.oom_score_adj:
            clamp_oom_score_adj(request.linux.oom_score_adj, warnings)  # runc cannot change it live
        for warning in warnings:
            log.warning("container %s: %s", container.id[:12], warning)
        await svc.runtime_for(container.runtime_handler).update(container.id, resources)
        config = type(container.config)()
        config.CopyFrom(container.config)
        config.linux.resources.CopyFrom(request.linux)
        svc.store.update(container.replace(config=config))
    return api.UpdateContainerResourcesResponse()

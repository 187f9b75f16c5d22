"""UpdateContainerResources: `<runtime> update` on a live container; the new resources also go
to the bundle's OCI spec and the stored config, so ContainerStatus reports them, a restart keeps
them and a CREATED container (no runtime state yet) gets them when it starts, as in containerd.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService
from criruntime.container.spec import clamp_oom_score_adj, resources_to_oci
from criruntime.errors import FailedPrecondition
from criruntime.oci.runtime import BundlePaths

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
        runtime = svc.runtime_for(container.runtime_handler)
        resources = resources_to_oci(request.linux, svc.host_cgroups_for(runtime), warnings)
        # runc cannot change oom_score_adj live; a container not started yet gets it at start
        oom_score_adj = (
            clamp_oom_score_adj(request.linux.oom_score_adj, warnings)
            if request.linux.oom_score_adj
            else None
        )
        for warning in warnings:
            log.warning("container %s: %s", container.id[:12], warning)
        if runtime.has_state(container.id):
            await runtime.update(container.id, resources)
            oom_score_adj = None
        _update_spec(BundlePaths(container.bundle_dir).config, resources, oom_score_adj)
        config = type(container.config)()
        config.CopyFrom(container.config)
        config.linux.resources.CopyFrom(request.linux)
        svc.store.update(container.replace(config=config))
    return api.UpdateContainerResourcesResponse()


def _update_spec(path: str, resources: dict[str, Any], oom_score_adj: int | None) -> None:
    """Replaces linux.resources in config.json (the device rules stay: they are not CRI
    resources), written to a temporary file and renamed over the old one."""
    with open(path) as f:
        spec = json.load(f)
    linux = spec.setdefault("linux", {})
    devices = (linux.get("resources") or {}).get("devices")
    linux["resources"] = {**resources, **({"devices": devices} if devices is not None else {})}
    if oom_score_adj is not None:
        spec.setdefault("process", {})["oomScoreAdj"] = oom_score_adj
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f)
    os.replace(tmp, path)

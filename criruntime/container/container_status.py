"""ContainerStatus: state, times, exit code and reason, image, mounts, log path, resources,
user; with verbose, the OCI spec and pid as JSON in info["info"]."""

from __future__ import annotations

import json
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.image_names import ImageNamer, ImageNames
from criruntime.container.model import Container, ContainerState
from criruntime.container.service import ContainerService
from criruntime.oci.runtime import BundlePaths


def to_api_status(container: Container, names: ImageNames | None = None) -> api.ContainerStatus:
    config = container.config
    names = names or ImageNames(container.image_name, container.image_ref, container.image_id)
    status = api.ContainerStatus(
        id=container.id,
        metadata=config.metadata,
        state=container.state.to_api(),
        created_at=container.created_at,
        started_at=container.started_at,
        finished_at=container.finished_at,
        exit_code=container.exit_code,
        image=api.ImageSpec(
            image=names.image,
            annotations=dict(config.image.annotations),
            user_specified_image=config.image.user_specified_image or config.image.image,
            runtime_handler=config.image.runtime_handler,
        ),
        image_ref=names.ref,
        image_id=names.id,
        reason=container.reason,
        message=container.message,
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        mounts=list(config.mounts),
        log_path=container.log_path,
        resources=api.ContainerResources(linux=config.linux.resources),
        user=api.ContainerUser(
            linux=api.LinuxContainerUser(
                uid=container.uid,
                gid=container.gid,
                supplemental_groups=list(container.supplemental_groups),
            )
        ),
        stop_signal=config.stop_signal,
    )
    return status


def verbose_info(container: Container) -> dict[str, str]:
    spec: Any = None
    try:
        with open(BundlePaths(container.bundle_dir).config) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        pass
    info = {
        "sandboxID": container.pod_id,
        "pid": container.pid if container.state is ContainerState.RUNNING else 0,
        "runtimeHandler": container.runtime_handler,
        "bundle": container.bundle_dir,
        "removing": False,
        "warnings": list(container.warnings),
        "runtimeSpec": spec,
    }
    return {"info": json.dumps(info)}


async def container_status(
    svc: ContainerService, request: api.ContainerStatusRequest
) -> api.ContainerStatusResponse:
    await svc.ensure_recovered()
    container = svc.get(request.container_id)
    names = await ImageNamer(svc.images).names(container)
    response = api.ContainerStatusResponse(status=to_api_status(container, names))
    if request.verbose:
        response.info.update(verbose_info(container))
    return response

"""ListContainers: filters on id (prefix), state, pod (prefix) and label selector; all but
the state go to the store, before rows are parsed."""

from __future__ import annotations

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.image_names import ImageNamer, ImageNames
from criruntime.container.model import Container, ContainerState
from criruntime.container.service import ContainerService


def to_api_container(container: Container, names: ImageNames | None = None) -> api.Container:
    config = container.config
    names = names or ImageNames(container.image_name, container.image_ref, container.image_id)
    return api.Container(
        id=container.id,
        pod_sandbox_id=container.pod_id,
        metadata=config.metadata,
        image=api.ImageSpec(
            image=names.image,
            user_specified_image=config.image.user_specified_image or config.image.image,
        ),
        # The image ID, not a digest: kubelet's image GC matches it against ListImages ids.
        image_ref=names.id,
        image_id=names.id,
        state=container.state.to_api(),
        created_at=container.created_at,
        labels=dict(config.labels),
        annotations=dict(config.annotations),
    )


async def list_containers(
    svc: ContainerService, request: api.ListContainersRequest
) -> api.ListContainersResponse:
    await svc.ensure_recovered()
    f = request.filter
    candidates = svc.store.list(
        id_prefix=f.id, pod_prefix=f.pod_sandbox_id, labels=f.label_selector
    )
    found = [
        svc.refresh(c)
        for c in candidates
        if c.state is not ContainerState.CREATING  # half-made: not a container yet
    ]
    # The state filter comes last: refresh() may just have seen a container exit.
    namer = ImageNamer(svc.images)
    return api.ListContainersResponse(
        containers=[
            to_api_container(c, await namer.names(c))
            for c in found
            if not f.HasField("state") or c.state.to_api() == f.state.state
        ]
    )

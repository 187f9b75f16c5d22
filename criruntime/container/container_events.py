"""GetContainerEvents: a server stream of container lifecycle events, each with its pod's status
and the statuses of the pod's containers, as kubelet's Evented PLEG reads them. The bus and what
counts as a change live in events.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.container_status import to_api_status
from criruntime.container.events import EventType
from criruntime.container.service import ContainerService

# pod id -> its status; None once the pod is gone.
PodStatusLookup = Callable[[str], api.PodSandboxStatus | None]


def describe(
    svc: ContainerService,
    pod_status: PodStatusLookup,
    container_id: str,
    pod_id: str,
    kind: EventType,
) -> api.ContainerEventResponse:
    """The full event, built once for every subscriber, right after the change was stored."""
    event = api.ContainerEventResponse(
        container_id=container_id, container_event_type=kind, created_at=time.time_ns()
    )
    status = pod_status(pod_id) if pod_id else None
    if status is not None:
        event.pod_sandbox_status.CopyFrom(status)
    # As stored: a refresh here could itself write, and so publish, in the middle of this one.
    event.containers_statuses.extend(to_api_status(c) for c in svc.store.list(pod_id))
    return event


async def get_container_events(svc: ContainerService) -> AsyncIterator[api.ContainerEventResponse]:
    sub = svc.events.subscribe()  # before recovery runs: the changes it makes are events too
    try:
        await svc.ensure_recovered()
        svc.watch_running()  # from now on, exits are events when they happen
        while True:
            yield await sub.next()
    finally:
        svc.events.unsubscribe(sub)

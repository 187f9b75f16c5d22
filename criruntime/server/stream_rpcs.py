"""Server-streaming RPCs of runtime.v1.RuntimeService (mixed into RuntimeServicer): container
events for kubelet's Evented PLEG."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import container_events
from criruntime.server.services import Services

Context = aio.ServicerContext[object, object]


class StreamRpcs:
    _s: Services

    async def GetContainerEvents(
        self, request: api.GetEventsRequest, context: Context
    ) -> AsyncIterator[api.ContainerEventResponse]:
        async for event in container_events.get_container_events(self._s.containers):
            yield event

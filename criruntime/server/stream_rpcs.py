"""Server-streaming RPCs of runtime.v1.RuntimeService (mixed into RuntimeServicer): container
events for kubelet's Evented PLEG, and the Stream* lists, which answer what the unary List
RPCs answer for the same filter, in pages that each fit one gRPC message."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import container_events, container_list, container_stats_list
from criruntime.sandbox import sandbox_list, sandbox_metrics, sandbox_stats
from criruntime.server.paging import pages
from criruntime.server.services import Services

Context = aio.ServicerContext[object, object]


class StreamRpcs:
    _s: Services

    async def GetContainerEvents(
        self, request: api.GetEventsRequest, context: Context
    ) -> AsyncIterator[api.ContainerEventResponse]:
        async for event in container_events.get_container_events(self._s.containers):
            yield event

    async def StreamPodSandboxes(
        self, request: api.StreamPodSandboxesRequest, context: Context
    ) -> AsyncIterator[api.StreamPodSandboxesResponse]:
        found = sandbox_list.list_pod_sandbox(
            self._s.sandboxes, api.ListPodSandboxRequest(filter=request.filter)
        )
        for page in pages(found.items):
            yield api.StreamPodSandboxesResponse(pod_sandboxes=page)

    async def StreamContainers(
        self, request: api.StreamContainersRequest, context: Context
    ) -> AsyncIterator[api.StreamContainersResponse]:
        found = await container_list.list_containers(
            self._s.containers, api.ListContainersRequest(filter=request.filter)
        )
        for page in pages(found.containers):
            yield api.StreamContainersResponse(containers=page)

    async def StreamContainerStats(
        self, request: api.StreamContainerStatsRequest, context: Context
    ) -> AsyncIterator[api.StreamContainerStatsResponse]:
        found = await container_stats_list.list_container_stats(
            self._s.containers, api.ListContainerStatsRequest(filter=request.filter)
        )
        for page in pages(found.stats):
            yield api.StreamContainerStatsResponse(container_stats=page)

    async def StreamPodSandboxStats(
        self, request: api.StreamPodSandboxStatsRequest, context: Context
    ) -> AsyncIterator[api.StreamPodSandboxStatsResponse]:
        found = await sandbox_stats.list_pod_sandbox_stats(
            self._s.sandboxes, api.ListPodSandboxStatsRequest(filter=request.filter)
        )
        for page in pages(found.stats):
            yield api.StreamPodSandboxStatsResponse(pod_sandbox_stats=page)

    async def StreamPodSandboxMetrics(
        self, request: api.StreamPodSandboxMetricsRequest, context: Context
    ) -> AsyncIterator[api.StreamPodSandboxMetricsResponse]:
        found = await sandbox_metrics.list_pod_sandbox_metrics(self._s.sandboxes)
        for page in pages(found.pod_metrics):
            yield api.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=page)

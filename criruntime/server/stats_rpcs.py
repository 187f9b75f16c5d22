"""Stats RPCs of runtime.v1.RuntimeService (mixed into RuntimeServicer): what kubelet's
summary API, eviction manager and `kubectl top` read."""

from __future__ import annotations

from grpc import aio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import container_stats, container_stats_list
from criruntime.errors import InvalidArgument
from criruntime.sandbox import sandbox_metrics, sandbox_stats
from criruntime.server.services import Services

Context = aio.ServicerContext[object, object]


class StatsRpcs:
    _s: Services

    async def ContainerStats(
        self, request: api.ContainerStatsRequest, context: Context
    ) -> api.ContainerStatsResponse:
        return await container_stats.container_stats(self._s.containers, request)

    async def ListContainerStats(
        self, request: api.ListContainerStatsRequest, context: Context
    ) -> api.ListContainerStatsResponse:
        return await container_stats_list.list_container_stats(self._s.containers, request)

    async def PodSandboxStats(
        self, request: api.PodSandboxStatsRequest, context: Context
    ) -> api.PodSandboxStatsResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id must not be empty")
        return await sandbox_stats.pod_sandbox_stats(self._s.sandboxes, request)

    async def ListPodSandboxStats(
        self, request: api.ListPodSandboxStatsRequest, context: Context
    ) -> api.ListPodSandboxStatsResponse:
        return await sandbox_stats.list_pod_sandbox_stats(self._s.sandboxes, request)

    async def ListMetricDescriptors(
        self, request: api.ListMetricDescriptorsRequest, context: Context
    ) -> api.ListMetricDescriptorsResponse:
        return sandbox_metrics.list_metric_descriptors()

    async def ListPodSandboxMetrics(
        self, request: api.ListPodSandboxMetricsRequest, context: Context
    ) -> api.ListPodSandboxMetricsResponse:
        return await sandbox_metrics.list_pod_sandbox_metrics(self._s.sandboxes)

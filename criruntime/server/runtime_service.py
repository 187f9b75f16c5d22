"""runtime.v1.RuntimeService: thin handlers that call the domain code and return its answer.

The node-level RPCs live here; pod and container RPCs live in sandbox_rpcs.py and
container_rpcs.py and are mixed in, as containerd spreads one CRI service over many files.
"""

from __future__ import annotations

from grpc import aio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc
from criruntime.node import runtime_config, status, version
from criruntime.server.container_rpcs import ContainerRpcs
from criruntime.server.sandbox_rpcs import SandboxRpcs
from criruntime.server.services import Services
from criruntime.server.stats_rpcs import StatsRpcs
from criruntime.server.stream_rpcs import StreamRpcs
from criruntime.server.unimplemented import fill_unimplemented

Context = aio.ServicerContext[object, object]


@fill_unimplemented(
    api.DESCRIPTOR.services_by_name["RuntimeService"], api_grpc.RuntimeServiceServicer
)
class RuntimeServicer(
    SandboxRpcs,
    ContainerRpcs,
    StatsRpcs,
    StreamRpcs,
    api_grpc.RuntimeServiceServicer,  # type: ignore[misc]  # generated, untyped
):
    def __init__(self, services: Services) -> None:
        self._s = services

    async def Version(self, request: api.VersionRequest, context: Context) -> api.VersionResponse:
        return version.version()

    async def Status(self, request: api.StatusRequest, context: Context) -> api.StatusResponse:
        return status.status(
            request,
            self._s.config,
            self._s.settings,
            self._s.sandboxes.host_cgroups,
            self._s.containers.runtime_set.info(),
            user_namespaces=not self._s.sandboxes.user_namespaces_unsupported(),
            streaming=self._s.streaming.info(),
        )

    async def RuntimeConfig(
        self, request: api.RuntimeConfigRequest, context: Context
    ) -> api.RuntimeConfigResponse:
        return runtime_config.runtime_config(self._s.config)

    async def UpdateRuntimeConfig(
        self, request: api.UpdateRuntimeConfigRequest, context: Context
    ) -> api.UpdateRuntimeConfigResponse:
        return runtime_config.update_runtime_config(request, self._s.settings)

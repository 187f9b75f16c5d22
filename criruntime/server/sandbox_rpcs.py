"""Pod sandbox RPCs of runtime.v1.RuntimeService (mixed into RuntimeServicer).

Thin: validate the request's shape, call the verb in criruntime/sandbox/, return its answer.
"""

from __future__ import annotations

from grpc import aio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument
from criruntime.sandbox.sandbox_list import list_pod_sandbox
from criruntime.sandbox.sandbox_portforward import check_port_forward
from criruntime.sandbox.sandbox_remove import remove_pod_sandbox
from criruntime.sandbox.sandbox_run import run_pod_sandbox
from criruntime.sandbox.sandbox_status import pod_sandbox_status
from criruntime.sandbox.sandbox_stop import stop_pod_sandbox
from criruntime.sandbox.sandbox_update import update_pod_sandbox_resources
from criruntime.server.services import Services

Context = aio.ServicerContext[object, object]


def _require_id(sandbox_id: str) -> str:
    if not sandbox_id:
        raise InvalidArgument("pod_sandbox_id must not be empty")
    return sandbox_id


class SandboxRpcs:
    _s: Services

    async def RunPodSandbox(
        self, request: api.RunPodSandboxRequest, context: Context
    ) -> api.RunPodSandboxResponse:
        sandbox_id = await run_pod_sandbox(self._s.sandboxes, request)
        return api.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def StopPodSandbox(
        self, request: api.StopPodSandboxRequest, context: Context
    ) -> api.StopPodSandboxResponse:
        await stop_pod_sandbox(self._s.sandboxes, _require_id(request.pod_sandbox_id))
        return api.StopPodSandboxResponse()

    async def RemovePodSandbox(
        self, request: api.RemovePodSandboxRequest, context: Context
    ) -> api.RemovePodSandboxResponse:
        await remove_pod_sandbox(self._s.sandboxes, _require_id(request.pod_sandbox_id))
        return api.RemovePodSandboxResponse()

    async def PodSandboxStatus(
        self, request: api.PodSandboxStatusRequest, context: Context
    ) -> api.PodSandboxStatusResponse:
        _require_id(request.pod_sandbox_id)
        return pod_sandbox_status(self._s.sandboxes, request)

    async def UpdatePodSandboxResources(
        self, request: api.UpdatePodSandboxResourcesRequest, context: Context
    ) -> api.UpdatePodSandboxResourcesResponse:
        _require_id(request.pod_sandbox_id)
        return await update_pod_sandbox_resources(self._s.sandboxes, request)

    async def ListPodSandbox(
        self, request: api.ListPodSandboxRequest, context: Context
    ) -> api.ListPodSandboxResponse:
        return list_pod_sandbox(self._s.sandboxes, request)

    async def PortForward(
        self, request: api.PortForwardRequest, context: Context
    ) -> api.PortForwardResponse:
        checked = check_port_forward(self._s.sandboxes, request)
        return api.PortForwardResponse(url=self._s.streaming.url("portforward", checked))

"""Container RPCs of runtime.v1.RuntimeService (mixed into RuntimeServicer)."""

from __future__ import annotations

from grpc import aio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import (
    container_attach,
    container_create,
    container_exec,
    container_execsync,
    container_list,
    container_log_reopen,
    container_remove,
    container_start,
    container_status,
    container_stop,
    container_update,
)
from criruntime.errors import Unimplemented
from criruntime.server.services import Services

Context = aio.ServicerContext[object, object]


class ContainerRpcs:
    _s: Services

    async def CreateContainer(
        self, request: api.CreateContainerRequest, context: Context
    ) -> api.CreateContainerResponse:
        return await container_create.create_container(self._s.containers, request)

    async def StartContainer(
        self, request: api.StartContainerRequest, context: Context
    ) -> api.StartContainerResponse:
        return await container_start.start_container(self._s.containers, request)

    async def StopContainer(
        self, request: api.StopContainerRequest, context: Context
    ) -> api.StopContainerResponse:
        return await container_stop.stop_container(self._s.containers, request)

    async def RemoveContainer(
        self, request: api.RemoveContainerRequest, context: Context
    ) -> api.RemoveContainerResponse:
        return await container_remove.remove_container(self._s.containers, request)

    async def ContainerStatus(
        self, request: api.ContainerStatusRequest, context: Context
    ) -> api.ContainerStatusResponse:
        return await container_status.container_status(self._s.containers, request)

    async def ListContainers(
        self, request: api.ListContainersRequest, context: Context
    ) -> api.ListContainersResponse:
        return await container_list.list_containers(self._s.containers, request)

    async def UpdateContainerResources(
        self, request: api.UpdateContainerResourcesRequest, context: Context
    ) -> api.UpdateContainerResourcesResponse:
        return await container_update.update_container_resources(self._s.containers, request)

    async def ReopenContainerLog(
        self, request: api.ReopenContainerLogRequest, context: Context
    ) -> api.ReopenContainerLogResponse:
        return await container_log_reopen.reopen_container_log(self._s.containers, request)

    async def CheckpointContainer(
        self, request: api.CheckpointContainerRequest, context: Context
    ) -> api.CheckpointContainerResponse:
        raise Unimplemented(
            "CheckpointContainer is not supported: checkpointing a container needs CRIU, which "
            "criruntime does not drive (kubelet's ContainerCheckpoint feature is unavailable "
            "on this node)"
        )

    async def ExecSync(
        self, request: api.ExecSyncRequest, context: Context
    ) -> api.ExecSyncResponse:
        return await container_execsync.exec_sync(self._s.containers, request)

    async def Exec(self, request: api.ExecRequest, context: Context) -> api.ExecResponse:
        checked = await container_exec.check_exec(self._s.containers, request)
        return api.ExecResponse(url=self._s.streaming.url("exec", checked))

    async def Attach(self, request: api.AttachRequest, context: Context) -> api.AttachResponse:
        checked = await container_attach.check_attach(self._s.containers, request)
        return api.AttachResponse(url=self._s.streaming.url("attach", checked))

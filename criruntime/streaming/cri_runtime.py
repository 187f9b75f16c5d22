"""The streaming Runtime over the daemon's services: exec and attach in containers, port-forward
into pods. The protocol code stays free of containers; the verbs stay free of frames."""

from __future__ import annotations

from criruntime.container import container_attach, container_exec
from criruntime.container.service import ContainerService
from criruntime.sandbox import sandbox_portforward
from criruntime.sandbox.service import SandboxService
from criruntime.streaming.runtime import Duplex, StreamIO


class CriStreamRuntime:
    def __init__(self, containers: ContainerService, sandboxes: SandboxService) -> None:
        self._containers = containers
        self._sandboxes = sandboxes

    async def exec(self, container_id: str, cmd: list[str], io: StreamIO) -> int:
        return await container_exec.exec_stream(self._containers, container_id, cmd, io)

    async def attach(self, container_id: str, io: StreamIO) -> None:
        await container_attach.attach_stream(self._containers, container_id, io)

    async def port_forward(self, pod_id: str, port: int, stream: Duplex) -> None:
        await sandbox_portforward.port_forward(self._sandboxes, pod_id, port, stream)

"""PortForward: TCP connections to a port of a pod, made from inside the pod's network namespace.

The connection goes to 127.0.0.1:PORT in the pod's netns, so ports bound only on the pod's
loopback work (as on containerd); a host-network pod's port is dialled on the host. The socket
is created by a short-lived thread that setns()es into the pod's netns and then dies: a socket
belongs to the namespace it was created in, so the daemon's own threads never leave the host's
namespace and the connect and the copying run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import FailedPrecondition, InvalidArgument
from criruntime.native import linux
from criruntime.sandbox.service import SandboxService
from criruntime.streaming.runtime import Duplex, StreamError

READ_CHUNK = 64 * 1024


def check_port_forward(
    svc: SandboxService, request: api.PortForwardRequest
) -> api.PortForwardRequest:
    if not request.pod_sandbox_id:
        raise InvalidArgument("pod_sandbox_id must not be empty")
    for port in request.port:
        if not 0 < port < 65536:
            raise InvalidArgument(f"port {port} is out of range 1-65535")
    sandbox = svc.store.get(request.pod_sandbox_id)
    if not sandbox.ready:
        raise FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
    checked = api.PortForwardRequest()
    checked.CopyFrom(request)
    checked.pod_sandbox_id = sandbox.id
    return checked


def _socket_in(netns: str) -> socket.socket:
    """A TCP socket of the netns at `netns`, made on a thread that exits right after."""
    result: list[socket.socket] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(fd, linux.CLONE_NEWNET)
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as e:  # re-raised by the caller
            error.append(e)

    thread = threading.Thread(target=work, name="portforward-netns")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def dial(netns: str, port: int) -> socket.socket:
    if netns:
        sock = await asyncio.to_thread(_socket_in, netns)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def port_forward(svc: SandboxService, pod_id: str, port: int, stream: Duplex) -> None:
    sandbox = svc.store.find(pod_id)
    if sandbox is None or not sandbox.ready:
        raise StreamError(f"pod sandbox {pod_id} is not ready")
    netns = "" if sandbox.host_network else sandbox.netns_path
    try:
        sock = await dial(netns, port)
    except OSError as e:
        raise StreamError(
            f"error forwarding port {port} to pod {pod_id}: "
            f"dial tcp4 127.0.0.1:{port}: connect: {os.strerror(e.errno) if e.errno else e}"
        ) from None
    try:
        reader, writer = await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
    except BaseException:
        sock.close()
        raise
    try:
        await _copy(reader, writer, stream)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Duplex) -> None:
    async def to_pod() -> None:
        while True:
            chunk = await stream.read()
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()  # the client is done sending; the pod's answer may follow

    async def from_pod() -> None:
        while True:
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                return
            await stream.write(chunk)

    sending = asyncio.create_task(to_pod())
    try:
        await from_pod()
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await sending

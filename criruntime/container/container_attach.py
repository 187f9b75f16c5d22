"""Attach: join a running container's main process stdio through its conmon.

conmon (started with --full-attach) listens on `<bundle>/attach`, a SOCK_SEQPACKET socket: every
packet it sends is one byte naming the pipe (2 stdout, 3 stderr) and the data; what we send is
the process's stdin, and our shutdown(SHUT_WR) is its EOF when the container was created with
stdin_once. Every attached client gets the output, so several attaches work at once. A terminal
is resized through conmon's control fifo (`1 <height> <width>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.container_exec import check_stdio, running_container
from criruntime.container.service import ContainerService
from criruntime.oci.runtime import BundlePaths
from criruntime.streaming.runtime import Sink, Source, StreamError, StreamIO, TerminalSize

ATTACH_PACKET = 8192 + 1  # conmon's buffer plus the pipe byte
_STDOUT, _STDERR = 2, 3  # conmon numbers its pipes stdin 1, stdout 2, stderr 3
_CTL_RESIZE = "1 {height} {width}\n"


async def check_attach(svc: ContainerService, request: api.AttachRequest) -> api.AttachRequest:
    """Validates an Attach request; returns it with the container's full id and its tty (a
    terminal is the container's property, whatever the client assumed)."""
    check_stdio(request.stdin, request.stdout, request.stderr, request.tty)
    container = await running_container(svc, request.container_id)
    checked = api.AttachRequest()
    checked.CopyFrom(request)
    checked.container_id = container.id
    checked.tty = container.config.tty
    if checked.tty:
        checked.stderr = False
    return checked


def _connect(bundle: str) -> socket.socket:
    # Through a directory fd, as unix socket paths are limited to 108 bytes.
    dir_fd = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dir_fd}/attach")
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    return sock


async def attach_stream(svc: ContainerService, container_id: str, io: StreamIO) -> None:
    try:
        container = svc.get(container_id)
    except Exception as e:
        raise StreamError(str(e)) from None
    try:
        sock = _connect(container.bundle_dir)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise StreamError(f"container {container_id} is not running") from None
        raise StreamError(f"cannot attach to container {container_id}: {e}") from None
    try:
        output = asyncio.create_task(_copy_out(sock, io.stdout, io.stderr))
        helpers = []
        if io.stdin is not None:
            helpers.append(asyncio.create_task(_copy_in(io.stdin, sock)))
        if io.resize is not None:
            helpers.append(asyncio.create_task(_resizes(io.resize, container.bundle_dir)))
        left = asyncio.create_task(io.gone.wait())
        try:
            await asyncio.wait({output, left}, return_when=asyncio.FIRST_COMPLETED)
            if output.done():
                output.result()
        finally:
            for task in [output, left, *helpers]:
                task.cancel()
            await asyncio.gather(output, left, *helpers, return_exceptions=True)
    finally:
        sock.close()


async def _copy_out(sock: socket.socket, stdout: Sink | None, stderr: Sink | None) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            packet = await loop.sock_recv(sock, ATTACH_PACKET)
        except ConnectionError:
            return
        if not packet:
            return  # conmon is gone: the container exited
        pipe, data = packet[0], packet[1:]
        sink = stderr if pipe == _STDERR else stdout if pipe == _STDOUT else None
        if sink is not None and data:
            await sink.write(data)


async def _copy_in(source: Source, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while True:
        chunk = await source.read()
        if not chunk:
            break
        for start in range(0, len(chunk), ATTACH_PACKET - 1):
            await loop.sock_sendall(sock, chunk[start : start + ATTACH_PACKET - 1])
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)  # conmon closes the process's stdin (stdin_once)


async def _resizes(queue: asyncio.Queue[TerminalSize], bundle: str) -> None:
    ctl = BundlePaths(bundle).ctl
    while True:
        size = await queue.get()
        if size.width <= 0 or size.height <= 0:
            continue
        try:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # conmon is gone
        try:
            os.write(fd, _CTL_RESIZE.format(height=size.height, width=size.width).encode())
        except OSError:
            pass
        finally:
            os.close(fd)

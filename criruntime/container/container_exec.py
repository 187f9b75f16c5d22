"""Exec: run a command in a running container with its stdio streamed to the client.

The RPC validates and answers with a URL on the streaming server; the client's connection to
that URL then calls `exec_stream`, which runs the command (oci/exec_process.py) and copies its
stdio until it exits. A client that goes away takes the process with it, as under containerd:
stdin is closed and the process gets SIGHUP (with a tty, a hang-up) or SIGTERM, then SIGKILL
after a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.child import readable
from criruntime.container.container_execsync import read_process
from criruntime.container.model import Container, ContainerState
from criruntime.container.service import ContainerService
from criruntime.errors import FailedPrecondition, InvalidArgument
from criruntime.oci.exec_process import ExecProcess, start_exec
from criruntime.streaming.runtime import Sink, Source, StreamError, StreamIO, TerminalSize

READ_CHUNK = 256 * 1024
HANGUP_GRACE = 1.0  # seconds between SIGHUP/EOF and SIGKILL once the client has gone
OUTPUT_GRACE = 2.0  # after the exit, how long output held open by its children is still read
FIRST_SIZE_WAIT = 0.05  # a tty client sends its size right away; start with it when it does
_EOT = b"\x04"  # end of input on a terminal


def check_stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout or stderr must be set")
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be set: a terminal has one output")


async def running_container(svc: ContainerService, container_id: str) -> Container:
    if not container_id:
        raise InvalidArgument("container_id must not be empty")
    await svc.ensure_recovered()
    container = svc.get(container_id)
    if container.state is not ContainerState.RUNNING:
        raise FailedPrecondition(
            f"container {container.id} is {container.state.value.lower()}, not running"
        )
    return container


async def check_exec(svc: ContainerService, request: api.ExecRequest) -> api.ExecRequest:
    """Validates an Exec request; returns it with the container's full id."""
    if not request.cmd:
        raise InvalidArgument("cmd must not be empty")
    check_stdio(request.stdin, request.stdout, request.stderr, request.tty)
    container = await running_container(svc, request.container_id)
    checked = api.ExecRequest()
    checked.CopyFrom(request)
    checked.container_id = container.id
    return checked


async def exec_stream(
    svc: ContainerService, container_id: str, cmd: list[str], io: StreamIO
) -> int:
    try:
        container = svc.get(container_id)
    except Exception as e:
        raise StreamError(str(e)) from None
    if container.state is not ContainerState.RUNNING:
        raise StreamError(f"container {container_id} is not running")
    process = read_process(container.bundle_dir)
    process["args"] = cmd
    process.pop("oomScoreAdj", None)
    size = None
    if io.tty and io.resize is not None:
        with contextlib.suppress(TimeoutError):
            first = await asyncio.wait_for(io.resize.get(), FIRST_SIZE_WAIT)
            size = (first.width, first.height)
    try:
        proc = start_exec(
            svc.runtime_for(container.runtime_handler),
            container.id,
            container.bundle_dir,
            process,
            stdin=io.stdin is not None,
            stdout=io.stdout is not None,
            stderr=io.stderr is not None,
            tty=io.tty,
            size=size,
        )
    except OSError as e:
        raise StreamError(f"cannot start exec: {e}") from None
    try:
        return await _supervise(proc, io)
    finally:
        proc.close()


async def _supervise(proc: ExecProcess, io: StreamIO) -> int:
    outputs = []
    if io.stdout is not None and proc.stdout >= 0:
        outputs.append(asyncio.create_task(copy_out(proc.stdout, io.stdout)))
    if io.stderr is not None and proc.stderr >= 0:
        outputs.append(asyncio.create_task(copy_out(proc.stderr, io.stderr)))
    helpers = []
    if io.stdin is not None and proc.stdin >= 0:
        helpers.append(asyncio.create_task(_copy_in(io.stdin, proc)))
    if io.resize is not None:
        helpers.append(asyncio.create_task(_apply_resizes(io.resize, proc)))
    exited = asyncio.create_task(readable(proc.pidfd))
    left = asyncio.create_task(io.gone.wait())
    try:
        await asyncio.wait({exited, left}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            # The client is gone: end of input (a hang-up on a tty), then the hard way.
            proc.close_stdin()
            proc.signal_process(signal.SIGHUP if io.tty else signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), HANGUP_GRACE)
            if not exited.done():
                proc.signal_process(signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(proc.pidfd, signal.SIGKILL)
                await exited
        code = proc.popen.wait()
        if outputs:
            _, pending = await asyncio.wait(outputs, timeout=OUTPUT_GRACE)
            for task in pending:
                task.cancel()
        return code if code >= 0 else 128 - code
    finally:
        for t in [*outputs, *helpers, exited, left]:
            t.cancel()
        await asyncio.gather(*outputs, *helpers, exited, left, return_exceptions=True)
        if proc.popen.returncode is None:  # cancelled (daemon stopping): nothing may linger
            proc.signal_process(signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(proc.pidfd, signal.SIGKILL)
            proc.popen.wait()


async def copy_out(fd: int, sink: Sink) -> None:
    """Copies a non-blocking fd to the client until its end (EIO is a pty's end)."""
    while True:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            await readable(fd)
            continue
        except OSError as e:
            if e.errno == errno.EIO:
                return
            raise
        if not chunk:
            return
        await sink.write(chunk)


async def _copy_in(source: Source, proc: ExecProcess) -> None:
    while True:
        chunk = await source.read()
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            if proc.stdin < 0:
                return
            try:
                n = os.write(proc.stdin, view)
            except BlockingIOError:
                await _writable(proc.stdin)
                continue
            except (BrokenPipeError, OSError):
                return
            view = view[n:]
    # The client closed stdin: EOF for a pipe; for a terminal, the end-of-input character.
    if proc.master >= 0:
        with contextlib.suppress(OSError):
            os.write(proc.master, _EOT)
    else:
        proc.close_stdin()


async def _apply_resizes(queue: asyncio.Queue[TerminalSize], proc: ExecProcess) -> None:
    while True:
        size = await queue.get()
        if size.width > 0 and size.height > 0:
            with contextlib.suppress(OSError):
                proc.resize(size.width, size.height)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)

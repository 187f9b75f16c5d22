"""Exec and attach sessions (kubelet's remotecommand protocol) over SPDY and WebSocket.

SPDY: the client opens one stream per stdio with a `streamType` header (error, stdin, stdout,
stderr, resize). WebSocket: channels 0-4 in that order (stdin, stdout, stderr, error, resize).
From v4 on, the error stream carries a JSON metav1.Status: Success, or Failure with reason
NonZeroExitCode and the code in an ExitCode cause, which is how kubectl learns exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from criruntime.streaming import spdy
from criruntime.streaming.runtime import Source, StreamError, StreamIO, TerminalSize
from criruntime.streaming.websocket import ChannelConn

log = logging.getLogger("criruntime.streaming")

V1, V2, V3, V4, V5 = (
    "channel.k8s.io",
    "v2.channel.k8s.io",
    "v3.channel.k8s.io",
    "v4.channel.k8s.io",
    "v5.channel.k8s.io",
)
SPDY_PROTOCOLS = [V5, V4, V3, V2, V1]  # preference order when a client offers several
WS_PROTOCOLS = [V5, V4, "v4.base64.channel.k8s.io", "base64.channel.k8s.io", V1]
STREAM_CREATION_TIMEOUT = 30.0  # kubelet's default
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)

# What runs once the streams are there: exec or attach, returning an exit code (None: attach).
Command = Callable[[StreamIO], Awaitable[int | None]]


@dataclass(frozen=True)
class Options:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def status_json(exit_code: int | None, error: str | None) -> bytes:
    """The metav1.Status kubectl decodes from the v4+ error stream."""
    status: dict[str, Any] = {"metadata": {}}
    if error is not None:
        status.update(
            status="Failure",
            message=error,
            reason="InternalError",
            details={"causes": [{"message": error}]},
            code=500,
        )
    elif exit_code:
        status.update(
            status="Failure",
            message=f"command terminated with non-zero exit code: exit status {exit_code}",
            reason="NonZeroExitCode",
            details={"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        )
    else:
        status["status"] = "Success"
    return json.dumps(status, separators=(",", ":")).encode()


def status_text(exit_code: int | None, error: str | None) -> bytes:
    """Before v4 the error stream carries only a failure's message."""
    if error is not None:
        return error.encode()
    if exit_code:
        return f"command terminated with non-zero exit code: exit status {exit_code}".encode()
    return b""


async def _pump_resize(source: Source, queue: asyncio.Queue[TerminalSize]) -> None:
    """Decodes the resize stream: JSON objects {"Width":..,"Height":..} back to back."""
    decoder = json.JSONDecoder()
    buffer = ""
    while True:
        chunk = await source.read()
        if not chunk:
            return
        buffer += chunk.decode(errors="replace")
        if len(buffer) > 64 * 1024:
            return  # not resize events: stop listening rather than buffer without bound
        while buffer.strip():
            try:
                size, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break
            buffer = buffer.lstrip()[end:]
            if isinstance(size, dict):
                with contextlib.suppress(TypeError, ValueError):
                    event = TerminalSize(int(size.get("Width", 0)), int(size.get("Height", 0)))
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(event)


async def _run(
    command: Command,
    io: StreamIO,
    resize_source: Source | None,
    write_status: Callable[[int | None, str | None], Awaitable[None]],
) -> None:
    resize_task = None
    if resize_source is not None and io.resize is not None:
        resize_task = asyncio.create_task(_pump_resize(resize_source, io.resize))
    exit_code: int | None = None
    error: str | None = None
    try:
        exit_code = await command(io)
    except StreamError as e:
        error = str(e)
    except (ConnectionError, OSError) as e:
        error = f"stream failed: {e}"
        log.info("streaming session ended: %s", e)
    except Exception as e:  # a bug: the client learns of it, the daemon keeps serving
        log.exception("streaming command failed")
        error = f"internal error: {e}"
    finally:
        if resize_task is not None:
            resize_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resize_task
    for sink in (io.stdout, io.stderr):
        if sink is not None:
            with contextlib.suppress(ConnectionError):
                await sink.close()
    with contextlib.suppress(ConnectionError):
        await write_status(exit_code, error)


async def serve_spdy(
    session: spdy.SpdySession,
    accepted: asyncio.Queue[spdy.Stream],
    protocol: str,
    opts: Options,
    command: Command,
) -> None:
    """Waits for the client's streams, runs the command, reports its status, ends the session."""
    resize = opts.tty and protocol in (V5, V4, V3)
    expected = 1 + opts.stdin + opts.stdout + opts.stderr + resize
    by_type: dict[str, spdy.Stream] = {}
    try:
        async with asyncio.timeout(STREAM_CREATION_TIMEOUT):
            while len(by_type) < expected:
                get = asyncio.ensure_future(accepted.get())
                gone = asyncio.ensure_future(session.gone_away.wait())
                done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                gone.cancel()
                if get not in done:
                    get.cancel()
                    return
                stream = get.result()
                kind = stream.header("streamtype")
                if kind not in ("error", "stdin", "stdout", "stderr", "resize") or kind in by_type:
                    await session.reset_stream(stream, spdy.RstStatus.REFUSED_STREAM)
                    continue
                by_type[kind] = stream
    except TimeoutError:
        log.info("streaming client did not open its streams within %.0fs", STREAM_CREATION_TIMEOUT)
        return
    error_stream = by_type.get("error")
    if error_stream is None:
        return
    stdin = by_type.get("stdin") if opts.stdin else None
    if stdin is not None and protocol == V1:
        await stdin.close()  # v1 clients never send stdin; kubelet closes it at once
    io = StreamIO(
        stdin=stdin,
        stdout=by_type.get("stdout"),
        stderr=by_type.get("stderr"),
        tty=opts.tty,
        resize=asyncio.Queue(16) if resize else None,
        gone=session.gone_away,
    )
    v4 = protocol in (V5, V4)

    async def write_status(exit_code: int | None, error: str | None) -> None:
        payload = status_json(exit_code, error) if v4 else status_text(exit_code, error)
        if payload:
            await error_stream.write(payload)
        await error_stream.close()

    # Streams we only read must be drained, or a full inbox would stall the session's reader.
    drains = [asyncio.create_task(_drain(error_stream))]
    stdin_stream = by_type.get("stdin")
    if stdin_stream is not None and io.stdin is None:
        drains.append(asyncio.create_task(_drain(stdin_stream)))
    try:
        await _run(command, io, by_type.get("resize") if resize else None, write_status)
    finally:
        for task in drains:
            task.cancel()


async def _drain(source: Source) -> None:
    with contextlib.suppress(ConnectionError):
        while await source.read():
            pass


async def serve_websocket(
    conn: ChannelConn, protocol: str, opts: Options, command: Command
) -> None:
    ch = conn.channels
    gone = asyncio.Event()
    pump = asyncio.create_task(conn.pump())
    pump.add_done_callback(lambda _: gone.set())
    drains = []
    try:
        # Tell the client the session is open: an empty message on the first writable channel.
        first = STDOUT if opts.stdout else STDERR if opts.stderr else ERROR
        await conn.send(first, b"")
        io = StreamIO(
            stdin=ch[STDIN] if opts.stdin else None,
            stdout=ch[STDOUT] if opts.stdout else None,
            stderr=ch[STDERR] if opts.stderr else None,
            tty=opts.tty,
            resize=asyncio.Queue(16) if opts.tty else None,
            gone=gone,
        )
        v4 = protocol in (V5, V4, "v4.base64.channel.k8s.io")

        async def write_status(exit_code: int | None, error: str | None) -> None:
            payload = status_json(exit_code, error) if v4 else status_text(exit_code, error)
            if payload:
                await conn.send(ERROR, payload)

        if not opts.stdin:
            drains.append(asyncio.create_task(_drain(ch[STDIN])))
        if not opts.tty:
            drains.append(asyncio.create_task(_drain(ch[RESIZE])))
        await _run(command, io, ch[RESIZE] if opts.tty else None, write_status)
    finally:
        await conn.ws.close()
        for task in [pump, *drains]:
            task.cancel()
        await asyncio.gather(pump, *drains, return_exceptions=True)

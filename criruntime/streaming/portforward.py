"""Port-forward sessions (kubelet's portforward.k8s.io protocol) over SPDY and WebSocket.

SPDY: per forwarded connection the client opens an error stream and a data stream, paired by
their `requestID` header and naming the pod port in `port`. Many pairs may be open at once; a
failed dial is written to that pair's error stream and the session lives on.
WebSocket: the ports are in the URL query; port i gets data channel 2i and error channel 2i+1,
each starting with the port number (2 bytes, little endian), one connection per port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from criruntime.streaming import spdy
from criruntime.streaming.runtime import Duplex, StreamError
from criruntime.streaming.websocket import ChannelConn

log = logging.getLogger("criruntime.streaming")

PROTOCOL = "portforward.k8s.io"
WS_PROTOCOLS = [PROTOCOL, "base64.portforward.k8s.io", ""]
PAIR_TIMEOUT = 30.0  # a data stream waits this long for its error stream, and back

# (port, the client's data stream) -> copies until either side ends; raises StreamError.
Forward = Callable[[int, Duplex], Awaitable[None]]


@dataclass
class _Pair:
    data: spdy.Stream | None = None
    error: spdy.Stream | None = None
    timer: asyncio.TimerHandle | None = None


def parse_port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StreamError(f"invalid port {raw!r}: must be a number in 1-65535")
    return int(raw)


async def serve_spdy(
    session: spdy.SpdySession, accepted: asyncio.Queue[spdy.Stream], forward: Forward
) -> None:
    pairs: dict[str, _Pair] = {}
    tasks: set[asyncio.Task[None]] = set()

    def expire(request_id: str) -> None:
        pair = pairs.pop(request_id, None)
        if pair is not None:
            for stream in (pair.data, pair.error):
                if stream is not None:
                    tasks.add(asyncio.create_task(session.reset_stream(stream)))

    try:
        while True:
            get = asyncio.ensure_future(accepted.get())
            gone = asyncio.ensure_future(session.gone_away.wait())
            done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if get not in done:
                get.cancel()
                return
            stream = get.result()
            kind = stream.header("streamtype")
            request_id = stream.header("requestid")
            if not request_id:
                # Old clients pair by stream id: the error stream is opened just before.
                request_id = str(stream.id if kind == "error" else stream.id - 2)
            if kind not in ("data", "error"):
                await session.reset_stream(stream, spdy.RstStatus.REFUSED_STREAM)
                continue
            pair = pairs.setdefault(request_id, _Pair())
            if getattr(pair, kind) is not None:
                await session.reset_stream(stream, spdy.RstStatus.PROTOCOL_ERROR)
                continue
            setattr(pair, kind, stream)
            if pair.data is None or pair.error is None:
                pair.timer = asyncio.get_running_loop().call_later(PAIR_TIMEOUT, expire, request_id)
                continue
            if pair.timer is not None:
                pair.timer.cancel()
            del pairs[request_id]
            task = asyncio.create_task(_forward_pair(pair.data, pair.error, forward))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for pair in pairs.values():
            if pair.timer is not None:
                pair.timer.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _forward_pair(data: spdy.Stream, error: spdy.Stream, forward: Forward) -> None:
    drain = asyncio.create_task(_drain(error))
    try:
        port = parse_port(data.header("port"))
        await forward(port, data)
    except StreamError as e:
        with contextlib.suppress(ConnectionError):
            await error.write(str(e).encode())
    except (ConnectionError, OSError) as e:
        log.info("port-forward connection ended: %s", e)
    finally:
        with contextlib.suppress(ConnectionError):
            await data.close()
            await error.close()
        drain.cancel()


async def _drain(stream: spdy.Stream) -> None:
    with contextlib.suppress(ConnectionError):
        while await stream.read():
            pass


async def serve_websocket(conn: ChannelConn, ports: list[int], forward: Forward) -> None:
    pump = asyncio.create_task(conn.pump())
    try:
        for i, port in enumerate(ports):
            prefix = struct.pack("<H", port)
            await conn.send(2 * i, prefix)
            await conn.send(2 * i + 1, prefix)

        async def one(i: int, port: int) -> None:
            data, error = conn.channels[2 * i], conn.channels[2 * i + 1]
            try:
                await forward(port, data)
            except StreamError as e:
                with contextlib.suppress(ConnectionError):
                    await error.write(str(e).encode())
            except (ConnectionError, OSError) as e:
                log.info("port-forward connection ended: %s", e)

        forwards: asyncio.Future[Any] = asyncio.gather(*(one(i, p) for i, p in enumerate(ports)))
        # The client leaving ends the session even while a pod port stays silent.
        waiters: list[asyncio.Future[Any]] = [forwards, pump]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        forwards.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwards
    finally:
        await conn.ws.close()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump

"""WebSocket transports: Kubernetes channel framing, and SPDY tunnelled in binary messages.

Framing is wsproto's; this module adds what Kubernetes layers on top (k8s.io/apimachinery
wsstream): each message starts with a channel number (binary protocols) or that number as an
ASCII digit followed by base64 (the base64 protocols); v5 adds channel 255, whose one-byte
payload closes the named channel (the client's stdin EOF).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

log = logging.getLogger("criruntime.streaming.websocket")

MAX_MESSAGE = 16 * 1024 * 1024
READ_CHUNK = 256 * 1024
CLOSE_CHANNEL = 255
QUEUE_MESSAGES = 8  # messages buffered per channel before the reader waits


class WebSocket:
    """One accepted server-side WebSocket over asyncio streams."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: WSConnection
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._ws = ws
        self._parts: list[bytes | str] = []
        self._size = 0
        self._pending: list[bytes | str] = []
        self.closed = False

    @classmethod
    async def accept(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        raw_request: bytes,
        choose: list[str],
    ) -> tuple[WebSocket, str] | None:
        """Completes the handshake for a request already read (`raw_request`), choosing the
        first of the client's subprotocols found in `choose` ("" when the client offered none
        and "" is in `choose`). None, after a 400/403 reply, when that is impossible."""
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(raw_request)
        request = next((e for e in ws.events() if isinstance(e, Request)), None)
        if request is None:
            return None
        offered = [p.strip() for p in request.subprotocols]
        chosen = next((p for p in offered if p in choose), None)
        if chosen is None and not offered and "" in choose:
            chosen = ""
        if chosen is None:
            writer.write(ws.send(RejectConnection(status_code=403, has_body=False)))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return None
        writer.write(ws.send(AcceptConnection(subprotocol=chosen or None)))
        await writer.drain()
        return cls(reader, writer, ws), chosen

    async def receive(self) -> bytes | str | None:
        """The next whole message; None once the connection is closed."""
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self.closed:
                return None
            try:
                data = await self._reader.read(READ_CHUNK)
            except ConnectionError:
                data = b""
            if not data:
                self.closed = True
                return None
            try:
                self._ws.receive_data(data)
                for event in self._ws.events():
                    await self._event(event)
            except (RemoteProtocolError, LocalProtocolError) as e:
                log.warning("websocket session reset: %s", e)
                await self.close(1002)
                return None

    async def _event(self, event: object) -> None:
        if isinstance(event, Message):
            self._size += len(event.data)
            if self._size > MAX_MESSAGE:
                await self.close(1009)
                return
            self._parts.append(event.data)
            if event.message_finished:
                if isinstance(event, TextMessage):
                    message: bytes | str = "".join(p for p in self._parts if isinstance(p, str))
                else:
                    message = b"".join(p for p in self._parts if isinstance(p, bytes))
                self._parts, self._size = [], 0
                self._pending.append(message)
        elif isinstance(event, Ping):
            await self._send_raw(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            with contextlib.suppress(LocalProtocolError):
                await self._send_raw(self._ws.send(event.response()))
            self.closed = True
            self._writer.close()

    async def _send_raw(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("websocket closed")
        self._writer.write(data)
        await self._writer.drain()

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            raise ConnectionResetError("websocket closed")
        try:
            await self._send_raw(self._ws.send(_message(data)))
        except LocalProtocolError:
            raise ConnectionResetError("websocket closed") from None

    def abort(self) -> None:
        """Drops the connection without a closing handshake."""
        self.closed = True
        self._writer.close()

    async def close(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(LocalProtocolError, ConnectionError, TimeoutError):
                await asyncio.wait_for(self._send_raw(self._ws.send(CloseConnection(code))), 1.0)
        self._writer.close()


def _message(data: bytes | str) -> BytesMessage | TextMessage:
    return TextMessage(data) if isinstance(data, str) else BytesMessage(data)


class Channel:
    """One numbered channel: read() what the client sent on it, write() to it."""

    def __init__(self, conn: ChannelConn, number: int) -> None:
        self._conn = conn
        self.number = number
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_MESSAGES)
        self.read_closed = False
        self.write_closed = False

    async def read(self) -> bytes:
        chunk = await self._inbox.get()
        if not chunk:
            self._inbox.put_nowait(b"")
        return chunk

    async def write(self, data: bytes) -> None:
        if not self.write_closed:
            await self._conn.send(self.number, data)

    async def close(self) -> None:
        # WebSocket channels have no half-close towards the client: the end of the session
        # ends them all.
        self.write_closed = True

    async def end_read(self) -> None:
        """The client closed this channel (v5 CLOSE): queued after its data."""
        if not self.read_closed:
            self.read_closed = True
            await self._inbox.put(b"")

    def abort(self) -> None:
        if not self.read_closed:
            self.read_closed = True
            # No waiting here: a reader behind a full inbox loses the rest, not the end.
            if self._inbox.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._inbox.get_nowait()
            self._inbox.put_nowait(b"")


class ChannelConn:
    """Kubernetes channel framing over a WebSocket (binary or base64, with v5's CLOSE)."""

    def __init__(self, ws: WebSocket, count: int, *, base64_text: bool, close_signal: bool) -> None:
        self.ws = ws
        self._base64 = base64_text
        self._close_signal = close_signal
        self.channels = [Channel(self, i) for i in range(count)]

    async def send(self, channel: int, data: bytes) -> None:
        if self._base64:
            await self.ws.send(chr(ord("0") + channel) + base64.b64encode(data).decode())
        else:
            await self.ws.send(bytes([channel]) + data)

    async def pump(self) -> None:
        """Reads messages into their channels until the connection ends."""
        try:
            while True:
                message = await self.ws.receive()
                if message is None:
                    return
                channel, payload = self._split(message)
                if channel is None:
                    continue
                if channel == CLOSE_CHANNEL and self._close_signal:
                    if payload and payload[0] < len(self.channels):
                        await self.channels[payload[0]].end_read()
                    continue
                if channel >= len(self.channels):
                    continue
                target = self.channels[channel]
                if payload and not target.read_closed:
                    await target._inbox.put(payload)
        finally:
            for ch in self.channels:
                ch.abort()

    def _split(self, message: bytes | str) -> tuple[int | None, bytes]:
        if isinstance(message, str):
            if not message or not self._base64:
                return None, b""
            try:
                return ord(message[0]) - ord("0"), base64.b64decode(message[1:])
            except ValueError:
                return None, b""
        if not message:
            return None, b""
        return message[0], message[1:]


class TunnelStream:
    """A byte stream carried in binary WebSocket messages (what kubectl's and crictl's
    WebSocket port-forward dial: SPDY/3.1 inside WebSocket)."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._buffer = bytearray()
        self._out: list[bytes] = []

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            message = await self._ws.receive()
            if message is None:
                raise asyncio.IncompleteReadError(bytes(self._buffer), n)
            if isinstance(message, str):
                raise ConnectionResetError("text message in a SPDY tunnel")
            self._buffer += message
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def write(self, data: bytes) -> None:
        self._out.append(data)

    async def drain(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            await self._ws.send(data)

    def close(self) -> None:
        self._ws.abort()

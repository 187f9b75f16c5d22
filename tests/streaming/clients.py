"""The tests' own streaming clients: SPDY/3.1 (as kubectl and crictl speak it) and WebSocket.

They share the daemon's frame and header codecs (criruntime/streaming/spdy.py), which the codec
tests pin down separately; the session logic here is the client side and written for tests:
open streams, send, half-close, collect what comes back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

from criruntime.streaming import spdy


class UpgradeRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


async def _http_upgrade(
    url: str, headers: list[tuple[str, str]]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str], bytes]:
    parts = urlsplit(url)
    context = None
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the tests' self-signed certificate
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=context)
    lines = [f"POST {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1"]
    lines.append(f"Host: {parts.netloc}")
    lines += [f"{k}: {v}" for k, v in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *rest = head.decode().split("\r\n")
    status = int(status_line.split()[1])
    reply = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)}
    if status != 101:
        body = await reader.read(65536)
        writer.close()
        raise UpgradeRefused(status, body)
    return reader, writer, reply, b""


@dataclass
class ClientStream:
    id: int
    headers: dict[str, str]
    data: bytearray = field(default_factory=bytearray)
    keep: bool = True  # False: only count what arrives (throughput benchmarks)
    received: int = 0
    fin: asyncio.Event = field(default_factory=asyncio.Event)
    reset: bool = False
    replied: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_until(self, marker: bytes, within: float = 10.0) -> bytes:
        async with asyncio.timeout(within):
            while marker not in self.data:
                self.arrived.clear()
                if self.fin.is_set():
                    break
                await self.arrived.wait()
        return bytes(self.data)

    async def wait_fin(self, within: float = 20.0) -> bytes:
        await asyncio.wait_for(self.fin.wait(), within)
        return bytes(self.data)


class SpdyClient:
    """A client SPDY session on an upgraded connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = spdy.HeaderCodec()
        self.streams: dict[int, ClientStream] = {}
        self.next_id = 1
        self.goaway = asyncio.Event()
        self.closed = asyncio.Event()
        self.pings: list[int] = []
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, protocols: list[str]) -> tuple[SpdyClient, str]:
        headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
        headers += [("X-Stream-Protocol-Version", p) for p in protocols]
        reader, writer, reply, _ = await _http_upgrade(url, headers)
        return cls(reader, writer), reply.get("x-stream-protocol-version", "")

    async def _frames(self) -> AsyncIterator[tuple[int, int, bytes]]:
        """(first word, flags, payload) of each frame, parsed from big reads."""
        buffer = bytearray()
        while True:
            pos = 0
            while len(buffer) - pos >= 8:
                word, flags_len = struct.unpack_from(">II", buffer, pos)
                end = pos + 8 + (flags_len & 0xFFFFFF)
                if len(buffer) < end:
                    break
                payload = bytes(buffer[pos + 8 : end])
                pos = end
                yield word, flags_len >> 24, payload
            del buffer[:pos]
            chunk = await self.reader.read(1 << 20)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buffer), None)
            buffer += chunk

    async def _read(self) -> None:
        try:
            async for word, flags, payload in self._frames():
                if word & 0x80000000:
                    kind = word & 0xFFFF
                    if kind == spdy.SYN_REPLY:
                        (sid,) = struct.unpack_from(">I", payload)
                        self.codec.decode(payload[4:])
                        self.streams[sid].replied.set()
                    elif kind == spdy.RST_STREAM:
                        (sid,) = struct.unpack_from(">I", payload)
                        if sid in self.streams:
                            self.streams[sid].reset = True
                            self.streams[sid].fin.set()
                            self.streams[sid].arrived.set()
                    elif kind == spdy.GOAWAY:
                        self.goaway.set()
                    elif kind == spdy.PING:
                        self.pings.append(struct.unpack(">I", payload)[0])
                else:
                    stream = self.streams.get(word & 0x7FFFFFFF)
                    if stream is not None:
                        stream.received += len(payload)
                        if stream.keep:
                            stream.data += payload
                        if flags & spdy.FLAG_FIN:
                            stream.fin.set()
                        stream.arrived.set()
        except (asyncio.IncompleteReadError, OSError):  # OSError: ssl.SSLError too
            pass
        finally:
            self.closed.set()
            for s in self.streams.values():
                s.fin.set()
                s.arrived.set()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def open(
        self, headers: dict[str, str], *, fin: bool = False, keep: bool = True
    ) -> ClientStream:
        sid = self.next_id
        self.next_id += 2
        stream = ClientStream(sid, headers, keep=keep)
        self.streams[sid] = stream
        block = self.codec.encode({k: [v] for k, v in headers.items()})
        payload = struct.pack(">IIBB", sid, 0, 0, 0) + block
        self.writer.write(spdy.control_frame(spdy.SYN_STREAM, 1 if fin else 0, payload))
        await self.writer.drain()
        await asyncio.wait_for(stream.replied.wait(), 10)
        return stream

    async def send(self, stream: ClientStream, data: bytes, *, fin: bool = False) -> None:
        self.writer.write(spdy.data_frame(stream.id, 1 if fin else 0, data))
        await self.writer.drain()

    async def ping(self, ping_id: int = 1) -> None:
        self.writer.write(spdy.control_frame(spdy.PING, 0, struct.pack(">I", ping_id)))
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    status: dict[str, Any] | None
    raw_error: bytes

    @property
    def exit_code(self) -> int:
        if self.status is None or self.status.get("status") == "Success":
            return 0
        for cause in self.status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
        return -1


async def spdy_exec(
    url: str,
    *,
    stdin: bytes | None = None,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    size: tuple[int, int] | None = None,
    protocol: str = "v4.channel.k8s.io",
    keep_stdin_open: bool = False,
) -> ExecResult:
    """One exec/attach session the way client-go runs it: the error stream first, then stdio."""
    client, negotiated = await SpdyClient.connect(url, [protocol])
    assert negotiated == protocol
    try:
        error = await client.open({"streamtype": "error"})
        in_stream = await client.open({"streamtype": "stdin"}) if stdin is not None else None
        out = await client.open({"streamtype": "stdout"}) if stdout else None
        err = await client.open({"streamtype": "stderr"}) if stderr and not tty else None
        resize = await client.open({"streamtype": "resize"}) if tty else None
        if resize is not None and size is not None:
            body = json.dumps({"Width": size[0], "Height": size[1]}).encode()
            await client.send(resize, body)
        if in_stream is not None and stdin is not None:
            if stdin:
                await client.send(in_stream, stdin)
            if not keep_stdin_open:
                await client.send(in_stream, b"", fin=True)
        raw = await error.wait_fin()
        for s in (out, err):
            if s is not None:
                await s.wait_fin()
        return ExecResult(
            stdout=bytes(out.data) if out else b"",
            stderr=bytes(err.data) if err else b"",
            status=json.loads(raw)
            if raw and protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io")
            else None,
            raw_error=raw,
        )
    finally:
        await client.close()


# ---- WebSocket ---------------------------------------------------------------------------------


class WsClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: WSConnection
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.ws = ws
        self.messages: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self._parts: list[Any] = []
        self._task = asyncio.create_task(self._read())
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, url: str, protocols: list[str]) -> tuple[WsClient, str]:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        ws = WSConnection(ConnectionType.CLIENT)
        target = parts.path + ("?" + parts.query if parts.query else "")
        writer.write(ws.send(Request(host=parts.netloc, target=target, subprotocols=protocols)))
        await writer.drain()
        while True:
            data = await reader.read(65536)
            if not data:
                raise UpgradeRefused(0, b"closed")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return cls(reader, writer, ws), event.subprotocol or ""
                if isinstance(event, RejectConnection):
                    writer.close()
                    raise UpgradeRefused(event.status_code, b"")

    async def _read(self) -> None:
        try:
            data = b""
            while True:
                if data:
                    self.ws.receive_data(data)
                # Events the handshake's read already buffered come first.
                for event in self.ws.events():
                    if isinstance(event, Message):
                        self._parts.append(event.data)
                        if event.message_finished:
                            if isinstance(event, TextMessage):
                                self.messages.put_nowait("".join(self._parts))
                            else:
                                self.messages.put_nowait(b"".join(self._parts))
                            self._parts = []
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        with contextlib.suppress(Exception):
                            self.writer.write(self.ws.send(event.response()))
                        return
                data = await self.reader.read(65536)
                if not data:
                    break
        except ConnectionError:
            pass
        finally:
            self.messages.put_nowait(None)

    async def send(self, data: bytes | str) -> None:
        message = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
        self.writer.write(self.ws.send(message))
        await self.writer.drain()

    async def receive(self, within: float = 20.0) -> bytes | str | None:
        return await asyncio.wait_for(self.messages.get(), within)

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


async def ws_exec(
    url: str,
    protocol: str,
    *,
    stdin: bytes | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[dict[int, bytes], WsClient]:
    """Runs a channel-protocol session to its end; returns what each channel carried."""
    client, negotiated = await WsClient.connect(url, [protocol])
    assert negotiated == protocol
    b64 = "base64" in protocol
    channels: dict[int, bytes] = {}

    async def send(ch: int, data: bytes) -> None:
        await client.send(
            chr(ord("0") + ch) + base64.b64encode(data).decode() if b64 else bytes([ch]) + data
        )

    if size is not None:
        await send(4, json.dumps({"Width": size[0], "Height": size[1]}).encode())
    if stdin is not None:
        if stdin:
            await send(0, stdin)
        if protocol == "v5.channel.k8s.io":
            await client.send(bytes([255, 0]))  # CLOSE stdin
    try:
        while True:
            message = await client.receive()
            if message is None:
                break
            if isinstance(message, str):
                ch, payload = ord(message[0]) - ord("0"), base64.b64decode(message[1:])
            else:
                ch, payload = message[0], message[1:]
            channels[ch] = channels.get(ch, b"") + payload
    finally:
        await client.close()
    return channels, client

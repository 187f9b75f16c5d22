"""The streaming server: one small HTTP/1.1 server for exec, attach and port-forward.

Exec/Attach/PortForward RPCs validate their request and get back a URL
`http://HOST:PORT/{exec,attach,portforward}/TOKEN`. The client then upgrades that request
either to SPDY/3.1 (`Upgrade: SPDY/3.1`, a `101 Switching Protocols`, then SPDY frames on the
same socket) or to WebSocket. HTTP parsing is h11's and WebSocket framing wsproto's, both
sans-IO, so both upgrades share one asyncio server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Awaitable
from urllib.parse import parse_qs, urlsplit

import h11

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.config import StreamingConfig
from criruntime.streaming import portforward, remotecommand, spdy
from criruntime.streaming.runtime import Duplex, Runtime, StreamError, StreamIO
from criruntime.streaming.tokens import TokenCache
from criruntime.streaming.websocket import ChannelConn, TunnelStream, WebSocket

log = logging.getLogger("criruntime.streaming")

MAX_REQUEST_HEAD = 64 * 1024
REQUEST_TIMEOUT = 30.0  # for the request head to arrive
PROTOCOL_HEADER = b"x-stream-protocol-version"
TUNNEL_PREFIX = "SPDY/3.1+"


class StreamingServer:
    def __init__(self, config: StreamingConfig, runtime: Runtime) -> None:
        self._config = config
        self._runtime = runtime
        self.tokens = TokenCache()
        self._server: asyncio.Server | None = None
        self._base_url = ""
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        host, _, port = self._config.address.rpartition(":")
        host = host.strip("[]")
        context = None
        if self._config.tls_cert_file:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._config.tls_cert_file, self._config.tls_key_file)
        self._server = await asyncio.start_server(
            self._accept, host, int(port), ssl=context, limit=MAX_REQUEST_HEAD
        )
        bound_port = self._server.sockets[0].getsockname()[1]
        # A URL must name a host the client can reach: an unspecified address means loopback.
        url_host = host
        if ipaddress.ip_address(host).is_unspecified:
            url_host = "127.0.0.1" if ipaddress.ip_address(host).version == 4 else "::1"
        if ":" in url_host:
            url_host = f"[{url_host}]"
        scheme = "https" if context else "http"
        self._base_url = f"{scheme}://{url_host}:{bound_port}"
        log.info("streaming server on %s", self._base_url)

    @property
    def base_url(self) -> str:
        return self._base_url

    def url(
        self, kind: str, request: api.ExecRequest | api.AttachRequest | api.PortForwardRequest
    ) -> str:
        return f"{self._base_url}/{kind}/{self.tokens.insert(kind, request)}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def info(self) -> dict[str, object]:
        """For Status(verbose): where clients connect and how many connections are open."""
        return {"address": self._base_url, "activeSessions": len(self._sessions)}

    # ---- one connection ----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("streaming connection failed")
        finally:
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        raw = bytearray()
        event: object = h11.NEED_DATA
        async with asyncio.timeout(REQUEST_TIMEOUT):
            while event is h11.NEED_DATA:
                data = await reader.read(16384)
                raw += data
                if len(raw) > MAX_REQUEST_HEAD:
                    return await _reply(writer, 431, "request head too large")
                conn.receive_data(data)
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as e:
                    return await _reply(writer, 400, f"bad request: {e}")
                if not data and event is h11.NEED_DATA:
                    return
        if not isinstance(event, h11.Request):
            return
        headers = {k.lower(): v for k, v in event.headers}
        target = urlsplit(event.target.decode(errors="replace"))
        parts = target.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("exec", "attach", "portforward"):
            return await _reply(writer, 404, "not found")
        kind, token = parts
        request = self.tokens.consume(kind, token)
        if request is None:
            return await _reply(writer, 404, "unknown or expired streaming token")
        upgrade = headers.get(b"upgrade", b"").decode(errors="replace").lower()
        if upgrade == "websocket":
            query = parse_qs(target.query)
            return await self._websocket(reader, writer, bytes(raw), kind, request, query)
        if upgrade != "spdy/3.1":
            return await _reply(writer, 400, "upgrade to SPDY/3.1 or websocket required")
        offered = [
            p.strip()
            for name, value in event.headers
            if name.lower() == PROTOCOL_HEADER
            for p in value.decode(errors="replace").split(",")
        ]
        supported = (
            remotecommand.SPDY_PROTOCOLS if kind != "portforward" else [portforward.PROTOCOL]
        )
        protocol = next((p for p in offered if p in supported), None)
        if protocol is None and not offered and kind != "portforward":
            protocol = remotecommand.V1  # no negotiation: the oldest protocol, as kubelet does
        if protocol is None:
            return await _reply(
                writer,
                403,
                f"unable to negotiate protocol: client supports {offered}, "
                f"server accepts {supported}",
                [("X-Accepted-Stream-Protocol-Versions", p) for p in supported],
            )
        writer.write(
            conn.send(
                h11.InformationalResponse(
                    status_code=101,
                    headers=[
                        (b"Connection", b"Upgrade"),
                        (b"Upgrade", b"SPDY/3.1"),
                        (b"X-Stream-Protocol-Version", protocol.encode()),
                    ],
                )
            )
            or b""
        )
        await writer.drain()
        leftover, _ = conn.trailing_data
        await self._spdy(_TcpStream(reader, writer, bytes(leftover)), kind, request, protocol)

    async def _spdy(
        self, transport: spdy.ByteStream, kind: str, request: object, protocol: str
    ) -> None:
        accepted: asyncio.Queue[spdy.Stream] = asyncio.Queue()
        session = spdy.SpdySession(transport, accepted.put_nowait)
        reader = asyncio.create_task(session.serve())
        try:
            if kind == "portforward":
                assert isinstance(request, api.PortForwardRequest)
                await portforward.serve_spdy(session, accepted, self._forwarder(request))
            else:
                opts, command = self._command(request)
                await remotecommand.serve_spdy(session, accepted, protocol, opts, command)
        finally:
            await session.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _websocket(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        raw: bytes,
        kind: str,
        request: object,
        query: dict[str, list[str]],
    ) -> None:
        if kind == "portforward":
            choose = [TUNNEL_PREFIX + portforward.PROTOCOL, *portforward.WS_PROTOCOLS]
        else:
            choose = [*remotecommand.WS_PROTOCOLS, ""]
        accepted = await WebSocket.accept(reader, writer, raw, choose)
        if accepted is None:
            return
        ws, protocol = accepted
        if protocol.startswith(TUNNEL_PREFIX):
            await self._spdy(TunnelStream(ws), kind, request, portforward.PROTOCOL)
            return
        base64_text = "base64" in protocol
        if kind == "portforward":
            assert isinstance(request, api.PortForwardRequest)
            try:
                ports = [portforward.parse_port(p) for p in query.get("port", [])]
            except StreamError as e:
                await ws.send(bytes([1]) + str(e).encode())
                await ws.close()
                return
            ports = ports or [int(p) for p in request.port]
            if not ports:
                await ws.send(bytes([1]) + b'query parameter "port" is required')
                await ws.close()
                return
            conn = ChannelConn(ws, 2 * len(ports), base64_text=base64_text, close_signal=False)
            await portforward.serve_websocket(conn, ports, self._forwarder(request))
            return
        opts, command = self._command(request)
        conn = ChannelConn(
            ws, 5, base64_text=base64_text, close_signal=protocol == remotecommand.V5
        )
        await remotecommand.serve_websocket(conn, protocol, opts, command)

    # ---- from requests to runtime calls --------------------------------------------------------

    def _command(self, request: object) -> tuple[remotecommand.Options, remotecommand.Command]:
        runtime = self._runtime
        if isinstance(request, api.ExecRequest):
            opts = remotecommand.Options(
                request.stdin, request.stdout, request.stderr and not request.tty, request.tty
            )
            container_id, cmd = request.container_id, list(request.cmd)

            async def run_exec(io: StreamIO) -> int | None:
                return await runtime.exec(container_id, cmd, io)

            return opts, run_exec
        assert isinstance(request, api.AttachRequest)
        opts = remotecommand.Options(
            request.stdin, request.stdout, request.stderr and not request.tty, request.tty
        )
        container_id = request.container_id

        async def run_attach(io: StreamIO) -> int | None:
            await runtime.attach(container_id, io)
            return None

        return opts, run_attach

    def _forwarder(self, request: api.PortForwardRequest) -> portforward.Forward:
        runtime, pod_id = self._runtime, request.pod_sandbox_id

        def forward(port: int, stream: Duplex) -> Awaitable[None]:
            return runtime.port_forward(pod_id, port, stream)

        return forward


class _TcpStream:
    """The upgraded socket as SPDY's byte stream, starting with bytes h11 had read ahead."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._head = head

    async def readexactly(self, n: int) -> bytes:
        if self._head:
            take, self._head = self._head[:n], self._head[n:]
            if len(take) < n:
                take += await self._reader.readexactly(n - len(take))
            return take
        return await self._reader.readexactly(n)

    def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("connection closed")
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


async def _reply(
    writer: asyncio.StreamWriter,
    status: int,
    message: str,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    """A plain-text error reply, and the connection closes."""
    body = (message + "\n").encode()
    reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 431: "Too Large"}
    head = [f"HTTP/1.1 {status} {reason.get(status, 'Error')}"]
    head += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
    head += ["Connection: close", *(f"{k}: {v}" for k, v in extra or [])]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()

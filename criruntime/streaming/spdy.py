"""SPDY/3.1 as kubelet, kubectl and crictl speak it: frames, header blocks and a server session.

No maintained Python library speaks SPDY, so this is the protocol by hand (draft 3.1): control
frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE and
DATA frames, with header blocks compressed by one zlib stream per direction primed with the
SPDY/3 dictionary.

Flow control: we grant the peer window as our readers consume data (WINDOW_UPDATE per stream
and for the connection). Go's spdystream, which every Kubernetes client uses, neither sends
nor honours WINDOW_UPDATE, so our send windows are enforced only once the peer shows it does
flow control (a WINDOW_UPDATE or an initial-window SETTINGS). Memory stays bounded either way:
each stream's inbox holds a few frames and the frame reader waits while it is full (as
spdystream's unbuffered channels do), and writes wait on the transport's drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("criruntime.streaming.spdy")

VERSION = 3
MAX_FRAME = (1 << 24) - 1  # the 24-bit length field's limit
MAX_CONTROL_FRAME = 1 << 16  # header blocks of a handful of short headers; more is abuse
MAX_HEADER_BLOCK = 1 << 16  # decompressed
MAX_STREAMS = 1024  # concurrent streams per session (port-forward opens two per connection)
INITIAL_WINDOW = 64 * 1024
SEND_CHUNK = 128 * 1024  # DATA payload per frame we send
INBOX_FRAMES = 8  # frames buffered per stream before the reader waits

# Frame types.
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
SETTINGS_INITIAL_WINDOW_SIZE = 7


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class ProtocolError(Exception):
    """The peer broke the protocol; the session is ended with GOAWAY(PROTOCOL_ERROR)."""


def _dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed
    common header names and values, then a run of status codes, dates and media types."""
    words = (  # noqa: SIM905  (kept as the draft's text)
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive"]
    words += ["origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502"
        "504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
        "charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


DICTIONARY = _dictionary()

Headers = dict[str, list[str]]


class HeaderCodec:
    """One direction's header compression state: a zlib stream that lives as long as the
    session, each block flushed with Z_SYNC_FLUSH so the peer can decode it at once."""

    def __init__(self) -> None:
        self._compress = zlib.compressobj(
            9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )
        self._decompress = zlib.decompressobj(zdict=DICTIONARY)

    def encode(self, headers: Headers) -> bytes:
        parts = [struct.pack(">I", len(headers))]
        for name, values in headers.items():
            raw_name = name.lower().encode()
            raw_value = "\x00".join(values).encode()
            parts += [struct.pack(">I", len(raw_name)), raw_name]
            parts += [struct.pack(">I", len(raw_value)), raw_value]
        block = b"".join(parts)
        return self._compress.compress(block) + self._compress.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, data: bytes) -> Headers:
        try:
            raw = self._decompress.decompress(data, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise ProtocolError(f"header block does not decompress: {e}") from None
        if self._decompress.unconsumed_tail:
            raise ProtocolError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        return parse_header_block(raw)


def parse_header_block(raw: bytes) -> Headers:
    try:
        (count,) = struct.unpack_from(">I", raw, 0)
        pos = 4
        headers: Headers = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", raw, pos)
            if pos + 4 + n > len(raw):
                raise ProtocolError("header value runs past the block")
            value = raw[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
            headers.setdefault(name.lower(), []).extend(value.split("\x00"))
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed header block: {e}") from None
    if pos != len(raw):
        raise ProtocolError("trailing bytes after the header block")
    return headers


def control_frame(frame_type: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


class ByteStream(Protocol):
    """What a session runs over: a TCP connection, or a WebSocket tunnel."""

    async def readexactly(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class Stream:
    """One peer-initiated stream: read() the peer's data (b"" once it half-closed), write()
    ours and close() to half-close our side."""

    session: SpdySession
    id: int
    headers: Headers
    _inbox: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(INBOX_FRAMES))
    _send_window: int = INITIAL_WINDOW
    _window_open: asyncio.Event = field(default_factory=asyncio.Event)
    _unacked: int = 0  # bytes read since our last WINDOW_UPDATE for this stream
    remote_closed: bool = False
    local_closed: bool = False
    reset: bool = False

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    async def read(self) -> bytes:
        """The next chunk of the peer's data; b"" at its end (FIN or reset)."""
        if self.reset and self._inbox.empty():
            return b""
        chunk = await self._inbox.get()
        if not chunk:
            self._inbox.put_nowait(b"")  # the end stays the end for further reads
            return b""
        self._unacked += len(chunk)
        self.session.consumed(self, len(chunk))
        return chunk

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.local_closed:
            chunk = bytes(view[:SEND_CHUNK])
            await self.session.send_data(self, chunk)
            view = view[len(chunk) :]

    async def close(self) -> None:
        """Half-closes our side (an empty DATA frame with FIN)."""
        if not self.local_closed and not self.reset:
            self.local_closed = True
            await self.session.send_fin(self)
            self.session.forget_if_done(self)

    def _deliver(self, chunk: bytes) -> Awaitable[None]:
        return self._inbox.put(chunk)

    async def _end(self) -> None:
        """The peer's FIN: queued after its data, waiting for room like the data does."""
        if not self.remote_closed:
            self.remote_closed = True
            await self._inbox.put(b"")

    def _abort(self) -> None:
        self.reset = True
        self.local_closed = True
        self._window_open.set()
        if not self.remote_closed:
            self.remote_closed = True
            # No waiting here: a reader behind a full inbox loses the rest, not the end.
            if self._inbox.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._inbox.get_nowait()
            self._inbox.put_nowait(b"")


StreamHandler = Callable[[Stream], None]


class SpdySession:
    """The server side of one SPDY/3.1 connection. `serve` reads frames until the peer goes away;
    each stream the peer opens is answered with SYN_REPLY and handed to `on_stream`."""

    def __init__(self, transport: ByteStream, on_stream: StreamHandler) -> None:
        self._t = transport
        self._on_stream = on_stream
        self._codec_in = HeaderCodec()
        self._codec_out = HeaderCodec()
        self.streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._peer_flow_control = False
        self._initial_window = INITIAL_WINDOW
        self._conn_window = INITIAL_WINDOW
        self._conn_window_open = asyncio.Event()
        self._conn_unacked = 0
        self.closed = False
        self.gone_away = asyncio.Event()  # the peer sent GOAWAY or the connection ended

    # ---- reading ---------------------------------------------------------------------------

    async def serve(self) -> None:
        """Reads frames until EOF, GOAWAY or a protocol error (answered with GOAWAY)."""
        try:
            while not self.closed:
                head = await self._t.readexactly(8)
                (word, flags_len) = struct.unpack(">II", head)
                flags, length = flags_len >> 24, flags_len & 0xFFFFFF
                # The header is checked before the payload is read: garbage must not make us
                # wait for megabytes that will never come.
                if word & 0x80000000:
                    version, frame_type = (word >> 16) & 0x7FFF, word & 0xFFFF
                    if version != VERSION:
                        raise ProtocolError(f"SPDY version {version}, not {VERSION}")
                    if length > MAX_CONTROL_FRAME:
                        raise ProtocolError(f"control frame of {length} bytes")
                    payload = await self._t.readexactly(length)
                    if await self._control(frame_type, flags, payload):
                        break
                else:
                    stream_id = word & 0x7FFFFFFF
                    if stream_id == 0 or stream_id > self._last_stream_id:
                        raise ProtocolError(f"DATA for stream {stream_id} that was never opened")
                    payload = await self._t.readexactly(length)
                    await self._data(stream_id, flags, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer went away; streams learn it below
        except ProtocolError as e:
            log.warning("SPDY session reset: %s", e)
            await self._goaway(GoAwayStatus.PROTOCOL_ERROR)
        finally:
            self.gone_away.set()
            for stream in list(self.streams.values()):
                stream._abort()

    async def _control(self, frame_type: int, flags: int, payload: bytes) -> bool:
        """Handles one control frame; True when the peer said GOAWAY."""
        if frame_type == SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("short SYN_STREAM")
            stream_id, _assoc = struct.unpack_from(">II", payload)
            stream_id &= 0x7FFFFFFF
            headers = self._codec_in.decode(payload[10:])  # always, to keep zlib in step
            await self._syn_stream(stream_id, flags, headers)
        elif frame_type in (SYN_REPLY, HEADERS):
            if len(payload) < 4:
                raise ProtocolError("short HEADERS")
            self._codec_in.decode(payload[4:])
            (stream_id,) = struct.unpack_from(">I", payload)
            stream = self.streams.get(stream_id & 0x7FFFFFFF)
            if stream is not None and flags & FLAG_FIN:
                await self._remote_fin(stream)
        elif frame_type == RST_STREAM:
            if len(payload) != 8:
                raise ProtocolError("RST_STREAM of the wrong size")
            stream_id, _status = struct.unpack(">II", payload)
            stream = self.streams.pop(stream_id & 0x7FFFFFFF, None)
            if stream is not None:
                stream._abort()
        elif frame_type == SETTINGS:
            self._settings(payload)
        elif frame_type == PING:
            if len(payload) != 4:
                raise ProtocolError("PING of the wrong size")
            (ping_id,) = struct.unpack(">I", payload)
            if ping_id % 2 == 1:  # the client's: echo it; even ids would be our own
                await self._send(control_frame(PING, 0, payload))
        elif frame_type == GOAWAY:
            return True
        elif frame_type == WINDOW_UPDATE:
            if len(payload) != 8:
                raise ProtocolError("WINDOW_UPDATE of the wrong size")
            stream_id, delta = struct.unpack(">II", payload)
            self._window_update(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        # Unknown control frames are ignored, as the draft asks.
        return False

    async def _syn_stream(self, stream_id: int, flags: int, headers: Headers) -> None:
        if stream_id == 0 or stream_id % 2 == 0 or stream_id <= self._last_stream_id:
            raise ProtocolError(f"bad new stream id {stream_id}")
        self._last_stream_id = stream_id
        if len(self.streams) >= MAX_STREAMS:
            await self._send(control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, 3)))
            return
        stream = Stream(self, stream_id, headers, _send_window=self._initial_window)
        stream._window_open.set()
        self.streams[stream_id] = stream
        reply = struct.pack(">I", stream_id) + self._codec_out.encode({})
        await self._send(control_frame(SYN_REPLY, 0, reply))
        if flags & FLAG_FIN:
            await self._remote_fin(stream)
        self._on_stream(stream)

    def _settings(self, payload: bytes) -> None:
        try:
            (count,) = struct.unpack_from(">I", payload)
            for i in range(count):
                flag_id, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                if flag_id & 0xFFFFFF == SETTINGS_INITIAL_WINDOW_SIZE:
                    delta = value - self._initial_window
                    self._initial_window = value
                    self._peer_flow_control = True
                    for stream in self.streams.values():
                        stream._send_window += delta
        except struct.error:
            raise ProtocolError("malformed SETTINGS") from None

    def _window_update(self, stream_id: int, delta: int) -> None:
        self._peer_flow_control = True
        if stream_id == 0:
            self._conn_window += delta
            self._conn_window_open.set()
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream._send_window += delta
            stream._window_open.set()

    async def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return  # a stream we already reset or finished: late frames are dropped
        if payload:
            await stream._deliver(payload)
        if flags & FLAG_FIN:
            await self._remote_fin(stream)

    async def _remote_fin(self, stream: Stream) -> None:
        await stream._end()
        self.forget_if_done(stream)

    def forget_if_done(self, stream: Stream) -> None:
        if stream.remote_closed and stream.local_closed:
            self.streams.pop(stream.id, None)

    def consumed(self, stream: Stream, n: int) -> None:
        """Grants the peer more window once half of it has been read (stream and connection)."""
        self._conn_unacked += n
        frames = b""
        if stream._unacked >= INITIAL_WINDOW // 2 and not stream.remote_closed:
            frames += control_frame(
                WINDOW_UPDATE, 0, struct.pack(">II", stream.id, stream._unacked)
            )
            stream._unacked = 0
        if self._conn_unacked >= INITIAL_WINDOW // 2:
            frames += control_frame(WINDOW_UPDATE, 0, struct.pack(">II", 0, self._conn_unacked))
            self._conn_unacked = 0
        if frames and not self.closed:
            with contextlib.suppress(Exception):
                self._t.write(frames)

    # ---- writing ---------------------------------------------------------------------------

    async def _send(self, frame: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("SPDY session closed")
        self._t.write(frame)
        await self._t.drain()

    async def send_data(self, stream: Stream, chunk: bytes) -> None:
        if self._peer_flow_control:
            while not stream.reset and (stream._send_window <= 0 or self._conn_window <= 0):
                waiter = stream._window_open if stream._send_window <= 0 else self._conn_window_open
                waiter.clear()
                await waiter.wait()
                if self.closed:
                    raise ConnectionResetError("SPDY session closed")
            allowed = min(stream._send_window, self._conn_window)
            if len(chunk) > allowed:
                await self.send_data(stream, chunk[:allowed])
                await self.send_data(stream, chunk[allowed:])
                return
            stream._send_window -= len(chunk)
            self._conn_window -= len(chunk)
        if stream.reset:
            raise ConnectionResetError(f"stream {stream.id} was reset")
        await self._send(data_frame(stream.id, 0, chunk))

    async def send_fin(self, stream: Stream) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(data_frame(stream.id, FLAG_FIN, b""))

    async def reset_stream(self, stream: Stream, status: RstStatus = RstStatus.CANCEL) -> None:
        stream._abort()
        self.streams.pop(stream.id, None)
        with contextlib.suppress(ConnectionError):
            await self._send(control_frame(RST_STREAM, 0, struct.pack(">II", stream.id, status)))

    async def _goaway(self, status: GoAwayStatus) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait_for(
                self._send(
                    control_frame(GOAWAY, 0, struct.pack(">II", self._last_stream_id, status))
                ),
                1.0,
            )

    async def close(self) -> None:
        """GOAWAY(OK), then the transport is closed."""
        if self.closed:
            return
        await self._goaway(GoAwayStatus.OK)
        self.closed = True
        self._conn_window_open.set()
        for stream in list(self.streams.values()):
            stream._abort()
        self._t.close()

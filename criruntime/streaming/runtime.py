"""The seam between the streaming protocols and the container runtime.

The server speaks SPDY or WebSocket and hands the runtime plain byte pipes; the runtime runs the
process, attaches to conmon or dials the pod's port, and never sees a frame.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


class Source(Protocol):
    async def read(self) -> bytes:
        """The next chunk; b"" once the client closed its side."""
        ...


class Sink(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None:
        """Tells the client this stream has ended."""
        ...


class Duplex(Source, Sink, Protocol):
    pass


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


@dataclass
class StreamIO:
    """A remote command's streams, each None when the client did not ask for it."""

    stdin: Source | None
    stdout: Sink | None
    stderr: Sink | None
    tty: bool
    resize: asyncio.Queue[TerminalSize] | None = None
    # Set once the client has gone (connection closed or reset): the process must be told.
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class StreamError(Exception):
    """A failure to report to the streaming client (on the error stream), not a crash."""


class Runtime(Protocol):
    async def exec(self, container_id: str, cmd: list[str], io: StreamIO) -> int:
        """Runs `cmd` in the container with `io`; returns its exit code once it has exited
        and its output has been written."""
        ...

    async def attach(self, container_id: str, io: StreamIO) -> None:
        """Joins the container's main process stdio until the client or the process leaves."""
        ...

    async def port_forward(self, pod_id: str, port: int, stream: Duplex) -> None:
        """Copies between `stream` and a TCP connection to `port` in the pod; raises
        StreamError when the connection cannot be made."""
        ...

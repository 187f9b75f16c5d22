"""Child processes run from the event loop without asyncio's subprocess transports.

Every OCI runtime call (create, exec, kill, delete, ...) and CNI plugin call is a short-lived
child on a hot path.
asyncio's subprocess machinery costs ~1-3 ms per child on top of the fork: a protocol and
transport per pipe, and on Python 3.11 a new waiter thread per child (ThreadedChildWatcher).
Here the child is a plain subprocess.Popen (vfork + exec), its pipes are read with
loop.add_reader and its exit is seen through a pidfd, which becomes readable when it exits.
The exit status is collected with waitpid on that one pid, so no other child is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import IO

_READ_CHUNK = 65536

DEVNULL = subprocess.DEVNULL
# Children whose exit is collected in the background: referenced here until they are reaped.
_REAPING: set[Child] = set()


class Child:
    """One running child. Its stdout and stderr are pipes when `capture` is set."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        capture: bool = True,
        stdin: bytes | None = None,
        stderr: int | None = None,
        pass_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        new_session: bool = False,
    ) -> None:
        stdin_fd = _memfd_with(stdin) if stdin is not None else DEVNULL
        try:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=stdin_fd,
                stdout=subprocess.PIPE if capture else DEVNULL,
                stderr=stderr if stderr is not None else (subprocess.PIPE if capture else DEVNULL),
                pass_fds=tuple(pass_fds),
                env=env,
                cwd=cwd,
                start_new_session=new_session,
            )
        finally:
            if stdin_fd != DEVNULL:
                os.close(stdin_fd)
        self.pid = self._proc.pid
        self._pidfd = os.pidfd_open(self.pid)

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signals the child through its pidfd: never a recycled pid."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    async def wait(self) -> int:
        """The exit status (negative signal number when killed, as subprocess reports it)."""
        if self._proc.returncode is None:
            await readable(self._pidfd)
            self._proc.wait()  # exited already: waitpid returns at once
        self._close_pidfd()
        assert self._proc.returncode is not None
        return self._proc.returncode

    async def communicate(self, cap: int = -1) -> tuple[int, bytes, bytes]:
        """Reads stdout and stderr to their ends, each kept to `cap` bytes (the rest is read and
        dropped, so the child never blocks on a full pipe; -1 keeps everything), then waits for
        the exit. On cancellation the child is killed and reaped."""
        try:
            out, err = await asyncio.gather(
                _read_all(self._proc.stdout, cap), _read_all(self._proc.stderr, cap)
            )
            return await self.wait(), out, err
        except BaseException:
            self.kill()
            self.reap_later()
            raise
        finally:
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()

    def reap_later(self) -> None:
        """Collects the exit in the background, for a caller that stops waiting."""
        if self._proc.returncode is None and self not in _REAPING:
            _REAPING.add(self)
            task = asyncio.get_running_loop().create_task(self.wait())
            task.add_done_callback(lambda _: _REAPING.discard(self))

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


def _memfd_with(data: bytes) -> int:
    """An fd holding `data` from offset 0: a child's stdin that never blocks the writer."""
    fd = os.memfd_create("stdin", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def readable(fd: int) -> None:
    """Returns once `fd` is readable (a pipe with data or at its end, an exited pidfd)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _resolve, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _read_all(stream: IO[bytes] | None, cap: int) -> bytes:
    if stream is None:
        return b""
    fd = stream.fileno()
    os.set_blocking(fd, False)
    buf = bytearray()
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            await readable(fd)
            continue
        if not chunk:
            return bytes(buf)
        room = len(chunk) if cap < 0 else cap - len(buf)
        if room > 0:
            buf += chunk[:room]

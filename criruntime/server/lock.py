"""Exclusive locks that keep a second daemon off our socket and root dir.

flock is released by the kernel when the process dies, so a kill -9 never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os


class LockHeld(Exception):
    """Another live process holds the lock; the message names it."""


class PidLock:
    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"{self.what} is in use by another criruntime (pid {holder}; lock {self.path}); "
                "stop it first or choose another --socket/--root"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays, harmless
            self._fd = None

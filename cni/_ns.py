"""Running code inside a network namespace.

setns(CLONE_NEWNET) switches only the calling thread, so we run the work in a
short-lived helper thread (like the reference plugins' `ns.Do`, which locks a
goroutine to its OS thread). Everything that thread does lands in the target
namespace: netlink sockets it opens, /proc/sys/net writes, and the network
namespace of any subprocess it starts. The caller's thread, and hence the
daemon, never leaves its own namespace, and no fork is needed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cni.errors import CNIError, ErrorCode

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs fd: which kind of namespace (Linux 4.11+)
_libc: Any = None


class NetnsGoneError(CNIError):
    """CNI_NETNS does not exist (any more): DEL treats this as done."""

    def __init__(self, path: str) -> None:
        super().__init__(ErrorCode.INVALID_NETNS, f"failed to open netns {path!r}: no such file")
        self.path = path


class NotANetnsError(CNIError):
    """CNI_NETNS exists but is no netns (e.g. an unmounted pin file)."""

    def __init__(self, path: str) -> None:
        super().__init__(ErrorCode.INVALID_NETNS, f"{path!r} is not a network namespace")
        self.path = path


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        # ctypes is imported lazily: only plugins that enter a netns pay for it.
        # (os.setns exists only from Python 3.12.)
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_netns(path: str) -> int:
    """Open a netns file (for IFLA_NET_NS_FD and setns); caller closes the fd.

    Checks it really is a network namespace (like the reference's fs-magic
    check), so an unmounted pin file fails here, with a clear error.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGoneError(path) from None
    except OSError as exc:
        raise CNIError(ErrorCode.INVALID_NETNS, f"failed to open netns {path!r}: {exc}") from exc
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        kind = -1  # ENOTTY: not an nsfs file at all
    if kind != _CLONE_NEWNET:
        os.close(fd)
        raise NotANetnsError(path)
    return fd


def is_current_netns(path: str) -> bool:
    """True if `path` is the netns this thread runs in (the "host" netns)."""
    try:
        target = os.stat(path)
        mine = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return False
    return (target.st_dev, target.st_ino) == (mine.st_dev, mine.st_ino)


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Call fn() in a helper thread that has joined the netns at `path`."""
    fd = open_netns(path)
    try:
        return run_in_netns_fd(fd, fn, path)
    finally:
        os.close(fd)


def run_in_netns_fd(fd: int, fn: Callable[[], T], path: str = "") -> T:
    return start_in_netns_fd(fd, fn, path)()


def start_in_netns_fd(fd: int, fn: Callable[[], T], path: str = "") -> Callable[[], T]:
    """Start fn() in a helper thread that joins the netns behind `fd`; the returned callable
    waits for it and returns its result (or raises its error). The caller may do other work
    meanwhile, and must call it."""
    outcome: list[tuple[bool, Any]] = []

    def worker() -> None:
        try:
            _setns(fd)
        except OSError as exc:
            err: CNIError
            if exc.errno == errno.EINVAL:
                err = NotANetnsError(path)
            else:
                err = CNIError(ErrorCode.INVALID_NETNS, f"failed to enter netns {path!r}: {exc}")
            outcome.append((False, err))
            return
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # re-raised in the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=worker, name="cni-netns", daemon=True)
    thread.start()

    def join() -> T:
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        result: T = value
        return result

    return join

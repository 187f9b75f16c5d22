"""ctypes bindings for setns, unshare, mount and umount2 (os.setns/os.unshare are 3.12+).

ctypes costs nothing at import and needs no compiler, and these calls are tiny: a few per pod.
Each wrapper raises OSError with errno and the call's arguments, as os functions do.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 0x100000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

_libc: Any = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(ret: int, what: str, path: str | None = None) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        if path is not None:
            raise OSError(err, f"{what}: {os.strerror(err)}", path)
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """Net, IPC and UTS (and PID-for-children) unshares affect only the calling thread."""
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({nstype:#x})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {source} ({fstype or 'bind'})",
        target,
    )


def bind_mount(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND, None)


def rbind_mount(source: str, target: str) -> None:
    """A bind of `source` with every mount below it."""
    mount(source, target, None, MS_BIND | MS_REC, None)


def make_shared(target: str) -> None:
    """Puts the mount at `target` in a peer group: mounts made under it later appear in every
    mount namespace holding a peer of it."""
    _check(_libc.mount(b"none", target.encode(), None, MS_SHARED, None), "make shared", target)


def umount(target: str, *, detach: bool = True) -> None:
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if detach else 0)
    _check(_libc.umount2(target.encode(), flags), "umount", target)

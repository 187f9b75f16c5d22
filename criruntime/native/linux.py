"""setns, unshare, sethostname, mount and umount2 (os.setns/os.unshare are 3.12+), through the
cffi declarations in _libc.py. Each wrapper raises OSError with errno and the call's arguments,
as os functions do.
"""

from __future__ import annotations

from criruntime.native._libc import check, cstr, libc

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
MS_PRIVATE = 0x40000
MS_SHARED = 0x100000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8


def unshare(flags: int) -> None:
    """Net, IPC and UTS (and PID-for-children) unshares affect only the calling thread."""
    check(libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    check(libc.setns(fd, nstype), f"setns({nstype:#x})")


def sethostname(name: str) -> None:
    raw = name.encode()
    check(libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    check(
        libc.mount(
            source.encode(), target.encode(), cstr(fstype or None), flags, cstr(data or None)
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
    check(
        libc.mount(b"none", target.encode(), cstr(None), MS_SHARED, cstr(None)),
        "make shared",
        target,
    )


def umount(target: str, *, detach: bool = True) -> None:
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if detach else 0)
    check(libc.umount2(target.encode(), flags), "umount", target)

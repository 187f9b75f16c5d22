"""The new mount API (Linux 5.12+): open_tree, mount_setattr and move_mount, through the cffi
declarations in _libc.py.

What it is for: an idmapped mount, which the daemon prepares itself because runc 1.1 cannot.
`idmapped_clone` detaches a copy of a directory's mount tree (open_tree with OPEN_TREE_CLONE),
marks it idmapped through a user namespace (mount_setattr with MOUNT_ATTR_IDMAP) and attaches
it elsewhere (move_mount). Every call checks its result and raises OSError with errno, as os
functions do.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from criruntime.native._libc import check, ffi, libc

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_SYMLINK_NOFOLLOW = 0x100
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000


def open_tree(path: str, flags: int, dfd: int = AT_FDCWD) -> int:
    """A file descriptor for the mount at `path`; with OPEN_TREE_CLONE, a detached copy."""
    return check(libc.open_tree(dfd, path.encode(), flags), "open_tree", path)


def mount_setattr(fd: int, attr_set: int, *, userns_fd: int = 0, recursive: bool = True) -> None:
    """Sets mount attributes on the mount tree `fd` refers to (MOUNT_ATTR_IDMAP needs
    `userns_fd`, and only takes on a detached tree)."""
    attr: Any = ffi.new("struct mount_attr *")
    attr.attr_set = attr_set
    attr.userns_fd = userns_fd
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    size = ffi.sizeof("struct mount_attr")
    check(libc.mount_setattr(fd, b"", flags, attr, size), "mount_setattr", f"fd {fd}")


def move_mount(fd: int, target: str) -> None:
    """Attaches the (detached) mount tree `fd` at `target`."""
    check(
        libc.move_mount(fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
        "move_mount",
        target,
    )


def idmapped_clone(source: str, target: str, userns_path: str, *, extra_attrs: int = 0) -> None:
    """Mounts a recursive copy of `source` at `target` (an existing directory or file),
    idmapped through the user namespace pinned at `userns_path`: a file owned by host id H
    appears owned by whatever id H maps to there, and writes map back the same way."""
    tree = open_tree(source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
    try:
        userns = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            mount_setattr(tree, MOUNT_ATTR_IDMAP | extra_attrs, userns_fd=userns)
        finally:
            os.close(userns)
        move_mount(tree, target)
    finally:
        with contextlib.suppress(OSError):
            os.close(tree)

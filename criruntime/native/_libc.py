"""The C library through cffi in ABI mode: the kernel structs and calls criruntime needs that
Python 3.11 lacks, declared once (`ffi.cdef`) and bound from the running process's libc
(`ffi.dlopen(None)`: glibc's own wrappers, 2.36+ for the new mount API). Nothing is compiled,
at install or at run time.
"""

from __future__ import annotations

import os
from typing import Any

import cffi

ffi = cffi.FFI()
ffi.cdef(
    """
    int unshare(int flags);
    int setns(int fd, int nstype);
    int sethostname(const char *name, size_t len);
    int mount(const char *source, const char *target, const char *filesystemtype,
              unsigned long mountflags, const void *data);
    int umount2(const char *target, int flags);

    struct mount_attr {
        uint64_t attr_set;
        uint64_t attr_clr;
        uint64_t propagation;
        uint64_t userns_fd;
    };
    int open_tree(int dfd, const char *filename, unsigned int flags);
    int move_mount(int from_dfd, const char *from_pathname,
                   int to_dfd, const char *to_pathname, unsigned int flags);
    int mount_setattr(int dfd, const char *path, unsigned int flags,
                      struct mount_attr *uattr, size_t usize);
    """
)
libc: Any = ffi.dlopen(None)


def check(ret: int, what: str, path: str | None = None) -> int:
    """`ret` when the call succeeded; else OSError with errno and the call's words, as os
    functions raise it."""
    if ret < 0:
        err = ffi.errno
        if path is not None:
            raise OSError(err, f"{what}: {os.strerror(err)}", path)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def cstr(value: str | None) -> Any:
    """A C string argument, NULL for None."""
    return value.encode() if value is not None else ffi.NULL

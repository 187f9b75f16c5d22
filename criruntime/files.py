"""Reading a file whose path someone else chose (a request, an image's rootfs).

Opened without waiting on anything (a FIFO with no writer would block for ever) and read only
when it is a regular file no bigger than the caller's cap (/dev/zero never ends). Blocking I/O:
call it from a thread, not the event loop.
"""

from __future__ import annotations

import os
import stat


class NotRegularFile(OSError):
    """A FIFO, device, socket or directory where a regular file was expected."""


class FileTooLarge(OSError):
    """Larger than the reader's cap."""


def read_regular_file(path: str, limit: int) -> bytes:
    """The file's bytes; NotRegularFile, FileTooLarge, or the OSError of open/read."""
    # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path} is not a regular file")
        if st.st_size > limit:
            raise FileTooLarge(f"{path} is larger than {limit} bytes")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # grew after the fstat
        raise FileTooLarge(f"{path} is larger than {limit} bytes")
    return data

"""Reading a seccomp profile a request names (SecurityProfile Localhost).

The path comes from the client, so the file is opened without following it into anything that
can block or grow without end: a FIFO or a device (/dev/zero) is refused before a byte is read,
a regular file only up to a size cap, and JSON nested past what the parser can take is an
INVALID_ARGUMENT like any other malformed profile. Call it off the event loop.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any

from criruntime.errors import InvalidArgument, quote

# Docker's default profile is ~20 KiB; a profile 50 times that is not one anybody wrote.
MAX_PROFILE_BYTES = 1 << 20


def read_profile(path: str, limit: int = MAX_PROFILE_BYTES) -> Any:
    """The parsed JSON of the profile at `path` (absolute), or InvalidArgument saying why not."""
    where = f"seccomp profile {quote(path)}"
    if not os.path.isabs(path):
        raise InvalidArgument(f"seccomp profile path must be absolute, got {quote(path)}")
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise InvalidArgument(f"{where} does not exist") from None
    except OSError as e:
        raise InvalidArgument(f"{where} cannot be read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{where} is not a regular file")
        if st.st_size > limit:
            raise InvalidArgument(f"{where} is larger than {limit} bytes")
        data = _read_upto(fd, limit + 1)
    except OSError as e:
        raise InvalidArgument(f"{where} cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew after the fstat
        raise InvalidArgument(f"{where} is larger than {limit} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidArgument(f"{where} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidArgument(f"{where} is not valid JSON: {str(e)[:200]}") from None


def _read_upto(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        try:
            chunk = os.read(fd, min(left, 1 << 16))
        except BlockingIOError:
            raise OSError(errno.EAGAIN, "would block") from None
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)

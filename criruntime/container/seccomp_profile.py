"""Reading a seccomp profile a request names (SecurityProfile Localhost).

The path comes from the client, so the file is opened without following it into anything that
can block or grow without end: a FIFO or a device (/dev/zero) is refused before a byte is read,
a regular file only up to a size cap, and JSON nested past what the parser can take is an
INVALID_ARGUMENT like any other malformed profile. Call it off the event loop.
"""

from __future__ import annotations

import json
import os
from typing import Any

from criruntime.errors import InvalidArgument, quote
from criruntime.files import FileTooLarge, NotRegularFile, read_regular_file

# Docker's default profile is ~20 KiB; a profile 50 times that is not one anybody wrote.
MAX_PROFILE_BYTES = 1 << 20


def read_profile(path: str, limit: int = MAX_PROFILE_BYTES) -> Any:
    """The parsed JSON of the profile at `path` (absolute), or InvalidArgument saying why not."""
    where = f"seccomp profile {quote(path)}"
    if not os.path.isabs(path):
        raise InvalidArgument(f"seccomp profile path must be absolute, got {quote(path)}")
    try:
        data = read_regular_file(path, limit)
    except FileNotFoundError:
        raise InvalidArgument(f"{where} does not exist") from None
    except NotRegularFile:
        raise InvalidArgument(f"{where} is not a regular file") from None
    except FileTooLarge:
        raise InvalidArgument(f"{where} is larger than {limit} bytes") from None
    except OSError as e:
        raise InvalidArgument(f"{where} cannot be read: {e.strerror}") from None
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidArgument(f"{where} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidArgument(f"{where} is not valid JSON: {str(e)[:200]}") from None

"""What a StartContainer attempt leaves in the bundle, so that a daemon killed at any step of it
(or of undoing it) is told apart on restart.

- `started_at`: written just before the process is let go (the exec fifo released), holding the
  time start took. Without it no process of this attempt ever ran; with it, recovery restores
  the real start time instead of the recovery's.
- `discarding`: written before a cut-short attempt is undone (its init killed, conmon's files
  dropped). While it is there, an exit file is the kill's (137), not the container's; recovery
  finishes the undo and the container stays CREATED.

Both live in the bundle, so resetting the bundle for a new attempt drops them.
"""

from __future__ import annotations

import contextlib
import os

STARTED_AT = "started_at"
DISCARDING = "discarding"


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def mark_started(bundle: str, started_at: int) -> None:
    _write(os.path.join(bundle, STARTED_AT), str(started_at))


def started_at(bundle: str) -> int | None:
    """When the attempt let its process go, or None if it never got that far."""
    try:
        with open(os.path.join(bundle, STARTED_AT)) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def mark_discarding(bundle: str) -> None:
    _write(os.path.join(bundle, DISCARDING), "")


def discarding(bundle: str) -> bool:
    return os.path.exists(os.path.join(bundle, DISCARDING))


def drop_exit(exit_file: str) -> None:
    """The exit file of an attempt being undone: gone before the mark that explains it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(exit_file)

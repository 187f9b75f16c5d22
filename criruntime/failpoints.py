"""Pause points for crash-timing tests: kill -9 the daemon at an exact step, deterministically.

A step that a kill can cut in two calls `await pause("name")`. Unless the daemon was started
with that name in CRIRUNTIME_FAILPOINTS (comma-separated), this returns at once and costs a set
lookup. When armed, the daemon creates the file `name` in CRIRUNTIME_FAILPOINT_DIR (how the test
knows the step is reached), logs it, and waits there forever; only that verb waits, the daemon
keeps answering, and the test kills it. Nothing sets these variables in production.
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger("criruntime.failpoints")

ENV = "CRIRUNTIME_FAILPOINTS"
DIR_ENV = "CRIRUNTIME_FAILPOINT_DIR"

_ARMED = frozenset(name for name in os.environ.get(ENV, "").split(",") if name)

# The points, named after the verb and the step they follow.
START_BEFORE_CREATE = "start-before-create"  # conmon / `runc create` not run yet
START_AFTER_CREATE = "start-after-create"  # created, the process not yet let go
START_AFTER_START = "start-after-start"  # running, not yet recorded RUNNING
DISCARD_AFTER_DELETE = "discard-after-delete"  # a cut-short start's init killed, bundle not reset
STOP_AFTER_SIGNAL = "stop-after-signal"  # the stop signal sent, the exit not yet recorded


async def pause(name: str) -> None:
    if name not in _ARMED:
        return
    directory = os.environ.get(DIR_ENV, "")
    if directory:
        os.close(os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT, 0o600))
    log.warning("failpoint %s reached: waiting here until the daemon is killed", name)
    await asyncio.Event().wait()

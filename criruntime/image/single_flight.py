"""Identical concurrent operations share one execution (pulls, blob downloads, unpacks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    def in_flight(self) -> int:
        return len(self._tasks)

    async def do(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        """Runs `start()` unless a call with `key` is already running; all callers get its
        result. The work is shielded: one caller giving up does not cancel it for the others."""
        task = self._tasks.get(key)
        if task is None:

            async def run() -> T:
                return await start()

            task = asyncio.get_running_loop().create_task(run())
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def _done(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a result nobody awaited is not logged as lost

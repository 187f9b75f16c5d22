"""Container events for GetContainerEvents (kubelet's Evented PLEG): what changed, fanned out to
every subscriber.

The container store reports every write here (`changed`), whatever caused it: an RPC, an exit
the exit watch noticed, recovery after a restart. A change of state becomes one event:
CREATED -> CONTAINER_CREATED_EVENT, RUNNING -> STARTED, EXITED -> STOPPED, a deleted row ->
DELETED. A write that keeps the state (new resources, say) is no event.

Each subscriber has its own bounded queue. Publishing never waits: a subscriber whose queue is
full is dropped (its stream ends with an error and a log line, and kubelet falls back to
relisting), so a stuck client never holds up the runtime or the other subscribers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TypeAlias

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.errors import CriError, ResourceExhausted, Unavailable

log = logging.getLogger("criruntime.container.events")

DEFAULT_CAPACITY = 1000  # events a subscriber may fall behind by before it is dropped

EventType: TypeAlias = api.ContainerEventType.ValueType
_EVENT_OF_STATE: dict[ContainerState, EventType] = {
    ContainerState.CREATED: api.ContainerEventType.CONTAINER_CREATED_EVENT,
    ContainerState.RUNNING: api.ContainerEventType.CONTAINER_STARTED_EVENT,
    ContainerState.EXITED: api.ContainerEventType.CONTAINER_STOPPED_EVENT,
}

# (container id, pod id, event type) -> the full event (pod status, its containers' statuses).
Describe = Callable[[str, str, EventType], api.ContainerEventResponse]


class Subscription:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queue: asyncio.Queue[api.ContainerEventResponse] = asyncio.Queue(capacity)
        self.ended: CriError | None = None  # why the stream ends: the next `next` raises it

    @property
    def overflowed(self) -> bool:
        return isinstance(self.ended, ResourceExhausted)

    def offer(self, event: api.ContainerEventResponse) -> None:
        if self.ended is not None:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.end(
                ResourceExhausted(
                    f"container event subscriber fell {self.capacity} events behind; list "
                    "containers again and resubscribe"
                )
            )

    def end(self, why: CriError) -> None:
        """Ends the stream with `why`, dropping what is queued (the client relists anyway)."""
        if self.ended is None:
            self.ended = why
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(api.ContainerEventResponse())  # wakes a waiting `next`

    async def next(self) -> api.ContainerEventResponse:
        event = await self._queue.get()
        if self.ended is not None:
            raise self.ended
        return event


class ContainerEvents:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.describe: Describe | None = None  # set at wiring; no events until then
        self._subscribers: set[Subscription] = set()
        self._known: dict[str, tuple[str, ContainerState]] = {}  # id -> (pod id, state)

    def seed(self, rows: Iterable[tuple[str, str, ContainerState]]) -> None:
        """The states the store holds at start-up, so only later changes become events."""
        self._known = {cid: (pod_id, state) for cid, pod_id, state in rows}

    # ---- subscribers ------------------------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self) -> Subscription:
        sub = Subscription(self.capacity)
        self._subscribers.add(sub)
        log.debug("container event subscriber joined (%d now)", len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        """At shutdown: every stream ends now (UNAVAILABLE), not when the drain times out."""
        for sub in self._subscribers:
            sub.end(Unavailable("criruntime is shutting down"))
        self._subscribers.clear()

    # ---- changes (called by the container store on every write) -----------------------------

    def changed(self, container_id: str, pod_id: str, state: ContainerState | None) -> None:
        """A row was written (`state`) or deleted (None)."""
        if state is None:
            previous = self._known.pop(container_id, None)
            if previous is not None and previous[1] is not ContainerState.CREATING:
                self._publish(
                    container_id, previous[0], api.ContainerEventType.CONTAINER_DELETED_EVENT
                )
            return
        previous = self._known.get(container_id)
        self._known[container_id] = (pod_id, state)
        kind = _EVENT_OF_STATE.get(state)
        if kind is not None and (previous is None or previous[1] is not state):
            self._publish(container_id, pod_id, kind)

    def _publish(self, container_id: str, pod_id: str, kind: EventType) -> None:
        if not self._subscribers or self.describe is None:
            return
        event = self.describe(container_id, pod_id, kind)
        for sub in list(self._subscribers):
            sub.offer(event)
            if sub.overflowed:
                log.warning(
                    "a container event subscriber fell %d events behind; ending its stream",
                    self.capacity,
                )
                self._subscribers.discard(sub)

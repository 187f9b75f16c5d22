"""The container event bus on its own: which writes are events, and a subscriber that falls
behind is dropped with an error while the others keep receiving."""

from __future__ import annotations

import asyncio

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.events import ContainerEvents, EventType
from criruntime.container.model import ContainerState
from criruntime.errors import ResourceExhausted

E = api.ContainerEventType


def bus(capacity: int = 1000) -> ContainerEvents:
    events = ContainerEvents(capacity)

    def describe(cid: str, pod_id: str, kind: EventType) -> api.ContainerEventResponse:
        response = api.ContainerEventResponse(container_id=cid, container_event_type=kind)
        response.pod_sandbox_status.id = pod_id
        return response

    events.describe = describe
    return events


def test_state_changes_are_events() -> None:
    async def main() -> list[tuple[str, str, EventType]]:
        events = bus()
        events.seed([("old", "p", ContainerState.RUNNING)])
        sub = events.subscribe()
        events.changed("a", "p", ContainerState.CREATING)  # not a container yet: nothing
        events.changed("a", "p", ContainerState.CREATED)
        events.changed("a", "p", ContainerState.CREATED)  # same state (new resources): nothing
        events.changed("a", "p", ContainerState.RUNNING)
        events.changed("old", "p", ContainerState.RUNNING)  # seeded: no change
        events.changed("old", "p", ContainerState.EXITED)
        events.changed("a", "", None)
        events.changed("gone", "", None)  # never known: nothing
        events.changed("half", "p", ContainerState.CREATING)
        events.changed("half", "", None)  # an undone create was never announced
        out: list[tuple[str, str, EventType]] = []
        while not sub._queue.empty():
            e = await sub.next()
            out.append((e.container_id, e.pod_sandbox_status.id, e.container_event_type))
        return out

    assert asyncio.run(main()) == [
        ("a", "p", E.CONTAINER_CREATED_EVENT),
        ("a", "p", E.CONTAINER_STARTED_EVENT),
        ("old", "p", E.CONTAINER_STOPPED_EVENT),
        ("a", "p", E.CONTAINER_DELETED_EVENT),
    ]


def test_a_slow_subscriber_is_dropped_and_others_go_on() -> None:
    async def main() -> None:
        events = bus(capacity=3)
        slow, fast = events.subscribe(), events.subscribe()
        for i in range(5):
            events.changed(f"c{i}", "p", ContainerState.CREATED)
            assert (await fast.next()).container_id == f"c{i}"
        assert slow.overflowed
        with pytest.raises(ResourceExhausted, match="fell 3 events behind"):
            await slow.next()
        events.changed("c9", "p", ContainerState.CREATED)
        assert (await fast.next()).container_id == "c9"

    asyncio.run(main())


def test_no_subscriber_builds_nothing() -> None:
    events = ContainerEvents()
    calls: list[str] = []

    def describe(cid: str, pod_id: str, kind: EventType) -> api.ContainerEventResponse:
        calls.append(cid)
        return api.ContainerEventResponse()

    events.describe = describe
    events.changed("a", "p", ContainerState.CREATED)
    assert calls == []

"""GetContainerEvents through the real daemon: every lifecycle change reaches every subscriber,
with the pod's status and its containers' statuses, whether an RPC, an exit seen by the exit
watch or a container left running across a restart caused it."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc
from tests.conftest import Daemon
from tests.container.daemon_env import (
    Cluster,
    ImageSet,
    container_config,
    force_cleanup,
    pull,
    sh,
    wait_for,
)

E = api.ContainerEventType
JOINED = "container event subscriber joined"
CREATED, STARTED = E.CONTAINER_CREATED_EVENT, E.CONTAINER_STARTED_EVENT
STOPPED, DELETED = E.CONTAINER_STOPPED_EVENT, E.CONTAINER_DELETED_EVENT


class Subscriber:
    """A GetContainerEvents stream read on a thread into a queue."""

    def __init__(self, daemon: Daemon, channel: grpc.Channel | None = None) -> None:
        self.events: queue.Queue[api.ContainerEventResponse | grpc.RpcError] = queue.Queue()
        runtime = api_grpc.RuntimeServiceStub(channel) if channel else daemon.runtime
        joined = daemon.logs().count(JOINED)
        self.stream: Any = runtime.GetContainerEvents(api.GetEventsRequest())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        # The call returns before the daemon has subscribed it: changes before that are not
        # this stream's to see.
        wait_for(lambda: daemon.logs().count(JOINED) > joined, what="subscribed")

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.events.put(event)
        except grpc.RpcError as e:
            self.events.put(e)

    def next(self, timeout: float = 10.0) -> api.ContainerEventResponse:
        item = self.events.get(timeout=timeout)
        assert isinstance(item, api.ContainerEventResponse), item
        return item

    def of(self, cid: str, count: int) -> list[api.ContainerEventResponse]:
        """The next `count` events about `cid`, skipping others' (another test's leftovers)."""
        found: list[api.ContainerEventResponse] = []
        while len(found) < count:
            event = self.next()
            if event.container_id == cid:
                found.append(event)
        return found

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(5)


@pytest.fixture
def own(make_daemon: Callable[..., Daemon], imgs: ImageSet) -> Iterator[Cluster]:
    d = make_daemon()
    cluster = Cluster(d)
    try:
        pull(d, imgs.busybox_ref)
        yield cluster
    finally:
        cluster.cleanup()
        force_cleanup(d)


@pytest.fixture
def subscribe(own: Cluster) -> Iterator[Callable[[], Subscriber]]:
    made: list[Subscriber] = []

    def make() -> Subscriber:
        sub = Subscriber(own.daemon)
        made.append(sub)
        return sub

    try:
        yield make
    finally:
        for sub in made:
            sub.close()


def test_lifecycle_events_reach_every_subscriber(
    own: Cluster, imgs: ImageSet, subscribe: Callable[[], Subscriber]
) -> None:
    pod = own.run_pod()
    subs = [subscribe(), subscribe()]
    idle = subscribe()  # never read until the end: holds up no one
    cid = own.create(pod, container_config(imgs.busybox_ref, "c", **sh("exec sleep 1000")))
    own.start(cid)
    own.stop(cid)
    own.remove(cid)
    for sub in [*subs, idle]:
        events = sub.of(cid, 4)
        assert [e.container_event_type for e in events] == [CREATED, STARTED, STOPPED, DELETED]
        created, started, stopped, deleted = events
        assert all(e.pod_sandbox_status.id == pod for e in events)
        assert created.pod_sandbox_status.metadata.name == own.pods[pod].metadata.name
        assert created.created_at <= started.created_at <= stopped.created_at
        assert [s.state for s in started.containers_statuses if s.id == cid] == [
            api.ContainerState.CONTAINER_RUNNING
        ]
        [status] = [s for s in stopped.containers_statuses if s.id == cid]
        assert status.state == api.ContainerState.CONTAINER_EXITED
        assert [s.id for s in deleted.containers_statuses if s.id == cid] == []
    # A write that keeps the state is no event.
    second = own.run(pod, container_config(imgs.busybox_ref, "d", **sh("exec sleep 1000")))
    assert [e.container_event_type for e in subs[0].of(second, 2)] == [CREATED, STARTED]
    own.rt.UpdateContainerResources(
        api.UpdateContainerResourcesRequest(
            container_id=second, linux=api.LinuxContainerResources(cpu_shares=512)
        ),
        timeout=10,
    )
    own.stop(second)
    assert [e.container_event_type for e in subs[0].of(second, 1)] == [STOPPED]


def test_exit_is_an_event_without_any_rpc(
    own: Cluster, imgs: ImageSet, subscribe: Callable[[], Subscriber]
) -> None:
    pod = own.run_pod()
    sub = subscribe()
    cid = own.run(pod, container_config(imgs.busybox_ref, "quick", **sh("sleep 0.3; exit 3")))
    assert [e.container_event_type for e in sub.of(cid, 2)] == [CREATED, STARTED]
    [stopped] = sub.of(cid, 1)  # the exit watch saw it: no List or Status asked
    assert stopped.container_event_type == STOPPED
    [status] = [s for s in stopped.containers_statuses if s.id == cid]
    assert (status.state, status.exit_code) == (api.ContainerState.CONTAINER_EXITED, 3)


def test_exit_after_a_restart_is_an_event(
    own: Cluster, imgs: ImageSet, subscribe: Callable[[], Subscriber]
) -> None:
    d = own.daemon
    gate = f"{d.base}/gate"
    os.makedirs(gate)
    pod = own.run_pod()
    config = container_config(
        imgs.busybox_ref,
        "waits",
        mounts=[api.Mount(container_path="/gate", host_path=gate)],
        **sh("while [ ! -e /gate/go ]; do sleep 0.02; done; exit 5"),
    )
    cid = own.run(pod, config)
    d.kill9()
    d.start()  # recovery watches the container it found running
    sub = subscribe()
    with open(f"{gate}/go", "w"):
        pass
    [stopped] = sub.of(cid, 1)
    assert stopped.container_event_type == STOPPED
    [status] = [s for s in stopped.containers_statuses if s.id == cid]
    assert status.exit_code == 5


def test_shutdown_ends_event_streams_at_once(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon()
    channel = grpc.insecure_channel(f"unix://{d.socket}")  # stop() closes the daemon's own
    sub = Subscriber(d, channel)
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 4  # not the 5 s drain a stream would otherwise hold
    ended = sub.events.get(timeout=5)
    assert isinstance(ended, grpc.RpcError)
    assert ended.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()

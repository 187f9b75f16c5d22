"""The Stream* lists through the real daemon: the same items as the unary lists for the same
filter, split into pages that each fit a gRPC message."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.server.paging import PAGE_BYTES
from tests.conftest import Daemon

NODE = api.NamespaceMode.NODE


def host_pod(daemon: Daemon, annotation: int, **labels: str) -> str:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="p" + secrets.token_hex(3), namespace="s", uid="u"),
        annotations={"big": "x" * annotation},
        labels=labels,
    )
    config.linux.security_context.namespace_options.network = NODE
    config.linux.security_context.namespace_options.pid = api.NamespaceMode.CONTAINER
    response = daemon.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=30)
    return str(response.pod_sandbox_id)


@pytest.fixture
def pods(daemon: Daemon) -> Iterator[list[str]]:
    # Three pods of ~40% of a page each: two pages.
    made = [host_pod(daemon, PAGE_BYTES * 2 // 5, n=str(i % 2)) for i in range(3)]
    try:
        yield made
    finally:
        for pod_id in made:
            daemon.runtime.RemovePodSandbox(
                api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30
            )


def test_stream_pod_sandboxes_pages(daemon: Daemon, pods: list[str]) -> None:
    pages = list(daemon.runtime.StreamPodSandboxes(api.StreamPodSandboxesRequest(), timeout=10))
    assert [len(p.pod_sandboxes) for p in pages] == [2, 1]
    assert all(p.ByteSize() <= PAGE_BYTES for p in pages)
    streamed = [s for p in pages for s in p.pod_sandboxes]
    unary = daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items
    assert streamed == list(unary)
    assert [s.id for s in streamed] == pods
    f = api.PodSandboxFilter(label_selector={"n": "0"})
    filtered = daemon.runtime.StreamPodSandboxes(api.StreamPodSandboxesRequest(filter=f))
    assert [s.id for p in filtered for s in p.pod_sandboxes] == [pods[0], pods[2]]


def test_stream_pod_sandbox_stats(daemon: Daemon, pods: list[str]) -> None:
    pages = list(daemon.runtime.StreamPodSandboxStats(api.StreamPodSandboxStatsRequest()))
    assert [len(p.pod_sandbox_stats) for p in pages] == [2, 1]
    assert [s.attributes.id for p in pages for s in p.pod_sandbox_stats] == pods
    f = api.PodSandboxStatsFilter(id=pods[1])
    one = list(daemon.runtime.StreamPodSandboxStats(api.StreamPodSandboxStatsRequest(filter=f)))
    assert [s.attributes.id for p in one for s in p.pod_sandbox_stats] == [pods[1]]
    assert one[0].pod_sandbox_stats[0].linux.HasField("cpu")


def test_empty_streams_send_nothing(daemon: Daemon) -> None:
    rt, img = daemon.runtime, daemon.image
    assert list(rt.StreamContainers(api.StreamContainersRequest(), timeout=10)) == []
    assert list(rt.StreamContainerStats(api.StreamContainerStatsRequest(), timeout=10)) == []
    assert list(rt.StreamPodSandboxes(api.StreamPodSandboxesRequest(), timeout=10)) == []
    assert list(img.StreamImages(api.StreamImagesRequest(), timeout=10)) == []

"""ContainerStats and ListContainerStats through the real daemon: a container that fills 32 MiB
of its /dev/shm, writes 1 MiB into its writable layer and spins on CPU; its figures must show
it. One daemon for the module (one pull)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.container.daemon_env import (
    Cluster,
    ImageSet,
    container_config,
    module_daemon,
    sh,
    wait_for,
)

MiB = 1 << 20
BUSY = sh(
    "head -c 33554432 /dev/zero > /dev/shm/fill; head -c 1048576 /dev/zero > /tmp/blob; "
    "touch /tmp/ready; exec yes > /dev/null"
)


@pytest.fixture(scope="module")
def shared(imgs: ImageSet) -> Iterator[Daemon]:
    with module_daemon(imgs.busybox_ref) as d:
        yield d


@pytest.fixture
def cl(shared: Daemon) -> Iterator[Cluster]:
    cluster = Cluster(shared)
    try:
        yield cluster
    finally:
        cluster.cleanup()


def stats(cl: Cluster, cid: str) -> api.ContainerStats:
    response = cl.rt.ContainerStats(api.ContainerStatsRequest(container_id=cid), timeout=10)
    stats: api.ContainerStats = response.stats
    return stats


def listed(cl: Cluster, **f: Any) -> dict[str, api.ContainerStats]:
    response = cl.rt.ListContainerStats(
        api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(**f)), timeout=10
    )
    return {s.attributes.id: s for s in response.stats}


def busy_container(cl: Cluster, imgs: ImageSet, pod: str, name: str = "busy") -> str:
    cid = cl.run(pod, container_config(imgs.busybox_ref, name, labels={"role": name}, **BUSY))
    wait_for(
        lambda: cl.exec(cid, "test", "-e", "/tmp/ready").exit_code == 0,
        timeout=20,
        what="container filled its memory",
    )
    return cid


def test_figures_of_a_busy_container(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    cid = busy_container(cl, imgs, pod)
    before = time.time_ns()
    first = stats(cl, cid)
    time.sleep(1.0)
    second = stats(cl, cid)
    assert second.attributes.id == cid
    assert second.attributes.metadata.name == "busy"
    assert dict(second.attributes.labels) == {"role": "busy"}
    cpu, memory, layer = second.cpu, second.memory, second.writable_layer
    assert cpu.timestamp > first.cpu.timestamp >= before
    used = cpu.usage_core_nano_seconds.value - first.cpu.usage_core_nano_seconds.value
    assert used > 50_000_000  # `yes` spins: at least 5% of a core over 1 s, even on a busy VM
    # The rate is over the previous sample, so it agrees with the counters.
    elapsed = cpu.timestamp - first.cpu.timestamp
    assert cpu.usage_nano_cores.value == used * 1_000_000_000 // elapsed
    assert memory.timestamp >= before
    assert memory.working_set_bytes.value >= 32 * MiB  # shm pages cannot just be dropped
    assert memory.usage_bytes.value >= memory.working_set_bytes.value
    assert memory.page_faults.value > 0
    assert memory.HasField("rss_bytes")
    assert not memory.HasField("available_bytes")  # no memory limit
    assert layer.used_bytes.value >= MiB and layer.inodes_used.value >= 2  # /tmp, /tmp/blob
    assert layer.fs_id.mountpoint
    assert layer.timestamp >= before
    # The same readings as cAdvisor-named metrics, per container within its pod.
    found = cl.rt.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest(), timeout=10)
    [pod_metrics] = [m for m in found.pod_metrics if m.pod_sandbox_id == pod]
    [mine] = [c for c in pod_metrics.container_metrics if c.container_id == cid]
    by_name = {m.name: m for m in mine.metrics}
    cpu_seconds = by_name["container_cpu_usage_seconds_total"]
    assert cpu_seconds.label_values[0] == "busy" and cpu_seconds.label_values[-1] == "total"
    assert cpu_seconds.value.value >= cpu.usage_core_nano_seconds.value // 1_000_000_000
    assert by_name["container_memory_working_set_bytes"].value.value >= 32 * MiB
    assert by_name["container_fs_usage_bytes"].label_values[-1] == layer.fs_id.mountpoint


def test_memory_limit_gives_available_bytes(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    config = container_config(imgs.busybox_ref, "limited", **BUSY)
    config.linux.resources.memory_limit_in_bytes = 128 * MiB
    cid = cl.run(pod, config)
    wait_for(lambda: cl.exec(cid, "test", "-e", "/tmp/ready").exit_code == 0, timeout=20)
    memory = stats(cl, cid).memory
    assert memory.available_bytes.value == 128 * MiB - memory.working_set_bytes.value


def test_list_filters_and_not_started(cl: Cluster, imgs: ImageSet) -> None:
    pod_a, pod_b = cl.run_pod(), cl.run_pod()
    running = cl.run(pod_a, container_config(imgs.busybox_ref, "a", labels={"app": "x"},
                                             **sh("exec sleep 1000")))  # fmt: skip
    created = cl.create(pod_b, container_config(imgs.busybox_ref, "b", labels={"app": "y"}))
    everything = listed(cl)
    assert {running, created} <= set(everything)
    # Not started: listed with its attributes and layer, but no cgroup to read yet.
    assert not everything[created].HasField("cpu")
    assert not everything[created].HasField("memory")
    assert everything[created].HasField("writable_layer")
    assert everything[running].cpu.HasField("usage_core_nano_seconds")
    assert set(listed(cl, id=running)) == {running}
    assert set(listed(cl, id=running[:12])) == {running}
    assert set(listed(cl, pod_sandbox_id=pod_b)) == {created}
    assert set(listed(cl, pod_sandbox_id=pod_a[:12])) == {running}
    assert set(listed(cl, label_selector={"app": "y"})) == {created}
    assert listed(cl, label_selector={"app": "none"}) == {}
    assert stats(cl, running[:12]).attributes.id == running
    # The Stream* variants answer the same for the same filter.
    f = api.ContainerStatsFilter(pod_sandbox_id=pod_b)
    streamed = cl.rt.StreamContainerStats(api.StreamContainerStatsRequest(filter=f), timeout=10)
    assert [s.attributes.id for page in streamed for s in page.container_stats] == [created]
    pages = cl.rt.StreamContainers(api.StreamContainersRequest(), timeout=10)
    unary = cl.rt.ListContainers(api.ListContainersRequest(), timeout=10).containers
    assert [c for page in pages for c in page.containers] == list(unary)
    images = cl.daemon.image.StreamImages(api.StreamImagesRequest(), timeout=10)
    listed_images = cl.daemon.image.ListImages(api.ListImagesRequest(), timeout=10).images
    assert [i for page in images for i in page.images] == list(listed_images) != []
    cl.stop(running)
    exited = listed(cl)[running]  # exited: still listed, its cgroup is gone
    assert not exited.HasField("cpu")


def test_unknown_container(cl: Cluster) -> None:
    with pytest.raises(grpc.RpcError) as e:
        stats(cl, "f" * 64)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        stats(cl, "")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

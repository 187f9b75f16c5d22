"""PodSandboxStats and ListPodSandboxStats through the real daemon: pod cgroup figures and the
pod's interfaces read inside its network namespace (CNI bridge network private to the test)."""

from __future__ import annotations

import os
from typing import Any

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.sandbox import network_stats
from tests.conftest import Daemon
from tests.sandbox.podnet import (
    PodNet,
    info,
    pod_config,
    remove_pod,
    run_pod,
    status,
    stop_pod,
    tcp_from_host,
    tcp_server_in,
)

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    1726      19    3    0    0     0          0         0      866      11    4    0    0     0       0          0
"""  # noqa: E501


def pod_stats(daemon: Daemon, pod_id: str) -> api.PodSandboxStats:
    response = daemon.runtime.PodSandboxStats(
        api.PodSandboxStatsRequest(pod_sandbox_id=pod_id), timeout=10
    )
    stats: api.PodSandboxStats = response.stats
    return stats


def listed(daemon: Daemon, **f: Any) -> dict[str, api.PodSandboxStats]:
    response = daemon.runtime.ListPodSandboxStats(
        api.ListPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter(**f)), timeout=10
    )
    return {s.attributes.id: s for s in response.stats}


def test_parse_net_dev() -> None:
    assert network_stats.parse_net_dev(NET_DEV) == [
        network_stats.InterfaceStats("eth0", rx_bytes=1726, rx_errors=3, tx_bytes=866, tx_errors=4)
    ]


def test_pod_figures_and_network(daemon: Daemon, podnet: PodNet) -> None:
    pod = run_pod(daemon, pod_config(labels={"app": "net"}))
    ip = status(daemon, pod).status.network.ip
    first = pod_stats(daemon, pod)
    assert first.attributes.id == pod and dict(first.attributes.labels) == {"app": "net"}
    linux = first.linux
    assert linux.cpu.HasField("usage_core_nano_seconds")
    assert linux.memory.HasField("working_set_bytes")
    assert linux.process.process_count.value == 0  # no container, no pod init
    assert list(linux.containers) == []
    eth0 = linux.network.default_interface
    assert eth0.name == "eth0"
    assert [i.name for i in linux.network.interfaces] == ["eth0"]  # the loopback is left out
    netns = info(daemon, pod)["netNamespacePath"]
    with tcp_server_in(netns, 8080) as server:
        assert tcp_from_host(ip, 8080).startswith("hello from pod")
        # Through a process in the pod's netns, or a thread that enters it: the same figures.
        via_pid = network_stats.read_pod_interfaces(netns, [os.getpid(), server.pid])
        via_thread = network_stats.read_pod_interfaces(netns, [os.getpid()])
        assert via_pid == via_thread and via_pid is not None
        assert via_pid[0].rx_bytes > eth0.rx_bytes.value
    second = pod_stats(daemon, pod).linux.network.default_interface
    assert second.rx_bytes.value > eth0.rx_bytes.value
    assert second.tx_bytes.value > eth0.tx_bytes.value
    assert second.rx_errors.value == 0 and second.tx_errors.value == 0
    remove_pod(daemon, pod)
    assert network_stats.read_pod_interfaces(netns, []) is None  # netns gone


def test_list_filters_and_stopped_pods(daemon: Daemon) -> None:
    host = api.NamespaceOption(network=api.NamespaceMode.NODE, pid=api.NamespaceMode.CONTAINER)
    configs = [pod_config(labels={"n": str(i)}) for i in range(3)]
    for config in configs:
        config.linux.security_context.namespace_options.CopyFrom(host)
    a, b, c = (run_pod(daemon, config) for config in configs)
    try:
        assert {a, b, c} <= set(listed(daemon))
        assert set(listed(daemon, id=a)) == {a}
        assert set(listed(daemon, id=b[:10])) == {b}
        assert set(listed(daemon, label_selector={"n": "2"})) == {c}
        # A host-network pod's interfaces are the node's: kubelet reads those itself.
        assert not listed(daemon, id=a)[a].linux.HasField("network")
        stop_pod(daemon, c)
        assert c not in listed(daemon)  # no cgroup or netns left to read
        assert pod_stats(daemon, c).attributes.id == c
    finally:
        for pod in (a, b, c):
            remove_pod(daemon, pod)
    for pod_id, code in (
        ("f" * 64, grpc.StatusCode.NOT_FOUND),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as e:
            pod_stats(daemon, pod_id)
        assert e.value.code() == code


def test_metrics_under_cadvisor_names(daemon: Daemon, podnet: PodNet) -> None:
    descriptors = daemon.runtime.ListMetricDescriptors(
        api.ListMetricDescriptorsRequest(), timeout=10
    ).descriptors
    keys = {d.name: list(d.label_keys) for d in descriptors}
    assert keys["container_cpu_usage_seconds_total"] == [
        "container",
        "id",
        "namespace",
        "pod",
        "cpu",
    ]
    assert keys["container_network_receive_bytes_total"][-1] == "interface"
    assert "container_memory_working_set_bytes" in keys
    pod = run_pod(daemon, pod_config())
    try:
        found = daemon.runtime.ListPodSandboxMetrics(
            api.ListPodSandboxMetricsRequest(), timeout=10
        ).pod_metrics
        [metrics] = [m for m in found if m.pod_sandbox_id == pod]
        by_name = {m.name: m for m in metrics.metrics}
        for m in metrics.metrics:
            assert len(m.label_values) == len(keys[m.name]), m.name
            assert m.timestamp > 0
        rx = by_name["container_network_receive_bytes_total"]
        assert rx.metric_type == api.MetricType.COUNTER
        assert rx.label_values[-1] == "eth0" and rx.label_values[3] == pod_config_name(daemon, pod)
        assert by_name["container_memory_working_set_bytes"].metric_type == api.MetricType.GAUGE
        streamed = daemon.runtime.StreamPodSandboxMetrics(
            api.StreamPodSandboxMetricsRequest(), timeout=10
        )
        assert pod in {m.pod_sandbox_id for page in streamed for m in page.pod_sandbox_metrics}
    finally:
        remove_pod(daemon, pod)


def pod_config_name(daemon: Daemon, pod_id: str) -> str:
    return str(status(daemon, pod_id).status.metadata.name)

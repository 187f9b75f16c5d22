"""ListMetricDescriptors, ListPodSandboxMetrics (and its stream): the pods' and containers'
figures under cAdvisor's metric names, labels and types, which kubelet serves on
/metrics/cadvisor when PodAndContainerStatsFromCRI is on.

Built from the same readings as ListPodSandboxStats. Label keys follow cAdvisor's container
labels (container, id, namespace, pod; id is the cgroup path as cAdvisor names it) plus a
metric's own (interface, cpu, failure_type, scope). CRI metric values are whole numbers, so
seconds are whole seconds, as CRI-O reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.sandbox.sandbox_stats import list_pod_sandbox_stats
from criruntime.sandbox.service import SandboxService

COUNTER, GAUGE = api.MetricType.COUNTER, api.MetricType.GAUGE
BASE_LABELS = ("container", "id", "namespace", "pod")
_NS = 1_000_000_000


@dataclass(frozen=True)
class Descriptor:
    name: str
    help: str
    type: api.MetricType.ValueType
    extra_labels: tuple[str, ...] = ()

    def to_api(self) -> api.MetricDescriptor:
        return api.MetricDescriptor(
            name=self.name, help=self.help, label_keys=[*BASE_LABELS, *self.extra_labels]
        )


CPU = Descriptor(
    "container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", COUNTER,
    ("cpu",),
)  # fmt: skip
MEM_USAGE = Descriptor(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed",
    GAUGE,
)
MEM_WORKING_SET = Descriptor(
    "container_memory_working_set_bytes", "Current working set in bytes.", GAUGE
)
MEM_RSS = Descriptor("container_memory_rss", "Size of RSS in bytes.", GAUGE)
MEM_SWAP = Descriptor("container_memory_swap", "Container swap usage in bytes.", GAUGE)
MEM_FAILURES = Descriptor(
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures.",
    COUNTER,
    ("failure_type", "scope"),
)
FS_USAGE = Descriptor(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    GAUGE,
    ("device",),
)
FS_INODES = Descriptor(
    "container_fs_inodes_used", "Number of inodes used by the container on this filesystem.",
    GAUGE, ("device",),
)  # fmt: skip
PROCESSES = Descriptor(
    "container_processes", "Number of processes running inside the container.", GAUGE
)
NET = {
    ("receive", "bytes"): "Cumulative count of bytes received",
    ("receive", "errors"): "Cumulative count of errors encountered while receiving",
    ("transmit", "bytes"): "Cumulative count of bytes transmitted",
    ("transmit", "errors"): "Cumulative count of errors encountered while transmitting",
}
NET_DESCRIPTORS = {
    key: Descriptor(f"container_network_{key[0]}_{key[1]}_total", text, COUNTER, ("interface",))
    for key, text in NET.items()
}
DESCRIPTORS = [
    CPU, MEM_USAGE, MEM_WORKING_SET, MEM_RSS, MEM_SWAP, MEM_FAILURES, FS_USAGE, FS_INODES,
    PROCESSES, *NET_DESCRIPTORS.values(),
]  # fmt: skip


def list_metric_descriptors() -> api.ListMetricDescriptorsResponse:
    return api.ListMetricDescriptorsResponse(descriptors=[d.to_api() for d in DESCRIPTORS])


Emit = Callable[..., None]


def _emitter(out: list[api.Metric], base: list[str]) -> Emit:
    def emit(d: Descriptor, timestamp: int, value: api.UInt64Value | int, *extra: str) -> None:
        v = value if isinstance(value, int) else value.value
        out.append(
            api.Metric(
                name=d.name,
                timestamp=timestamp,
                metric_type=d.type,
                label_values=[*base, *extra],
                value=api.UInt64Value(value=v),
            )
        )

    return emit


def _cpu_memory(emit: Emit, cpu: api.CpuUsage | None, memory: api.MemoryUsage | None) -> None:
    if cpu is not None and cpu.HasField("usage_core_nano_seconds"):
        emit(CPU, cpu.timestamp, cpu.usage_core_nano_seconds.value // _NS, "total")
    if memory is not None:
        t = memory.timestamp
        for d, field in (
            (MEM_USAGE, "usage_bytes"),
            (MEM_WORKING_SET, "working_set_bytes"),
            (MEM_RSS, "rss_bytes"),
        ):
            if memory.HasField(field):  # type: ignore[arg-type]  # one of the names above
                emit(d, t, getattr(memory, field))
        if memory.HasField("page_faults"):
            emit(MEM_FAILURES, t, memory.page_faults, "pgfault", "container")
        if memory.HasField("major_page_faults"):
            emit(MEM_FAILURES, t, memory.major_page_faults, "pgmajfault", "container")


def _container_metrics(
    pod: api.PodSandboxStats, cgroup_parent: str, stats: api.ContainerStats
) -> api.ContainerMetrics:
    metrics: list[api.Metric] = []
    a = stats.attributes
    meta = pod.attributes.metadata
    emit = _emitter(
        metrics, [a.metadata.name, f"{cgroup_parent}/{a.id}", meta.namespace, meta.name]
    )
    _cpu_memory(
        emit,
        stats.cpu if stats.HasField("cpu") else None,
        stats.memory if stats.HasField("memory") else None,
    )
    if stats.HasField("swap") and stats.swap.HasField("swap_usage_bytes"):
        emit(MEM_SWAP, stats.swap.timestamp, stats.swap.swap_usage_bytes)
    layer = stats.writable_layer
    if stats.HasField("writable_layer"):
        emit(FS_USAGE, layer.timestamp, layer.used_bytes, layer.fs_id.mountpoint)
        emit(FS_INODES, layer.timestamp, layer.inodes_used, layer.fs_id.mountpoint)
    return api.ContainerMetrics(container_id=a.id, metrics=metrics)


def to_metrics(pod: api.PodSandboxStats, cgroup_parent: str) -> api.PodSandboxMetrics:
    metrics: list[api.Metric] = []
    meta = pod.attributes.metadata
    # The pod cgroup itself: cAdvisor labels it with an empty container name.
    emit = _emitter(metrics, ["", cgroup_parent, meta.namespace, meta.name])
    linux = pod.linux
    _cpu_memory(
        emit,
        linux.cpu if linux.HasField("cpu") else None,
        linux.memory if linux.HasField("memory") else None,
    )
    if linux.HasField("process"):
        emit(PROCESSES, linux.process.timestamp, linux.process.process_count)
    for i in linux.network.interfaces:
        t = linux.network.timestamp
        emit(NET_DESCRIPTORS["receive", "bytes"], t, i.rx_bytes, i.name)
        emit(NET_DESCRIPTORS["receive", "errors"], t, i.rx_errors, i.name)
        emit(NET_DESCRIPTORS["transmit", "bytes"], t, i.tx_bytes, i.name)
        emit(NET_DESCRIPTORS["transmit", "errors"], t, i.tx_errors, i.name)
    return api.PodSandboxMetrics(
        pod_sandbox_id=pod.attributes.id,
        metrics=metrics,
        container_metrics=[_container_metrics(pod, cgroup_parent, c) for c in linux.containers],
    )


async def list_pod_sandbox_metrics(svc: SandboxService) -> api.ListPodSandboxMetricsResponse:
    stats = await list_pod_sandbox_stats(svc, api.ListPodSandboxStatsRequest())
    cgroups = {s.id: s.cgroup_parent for s in svc.store.list()}
    return api.ListPodSandboxMetricsResponse(
        pod_metrics=[to_metrics(pod, cgroups.get(pod.attributes.id, "")) for pod in stats.stats]
    )

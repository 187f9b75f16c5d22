"""PodSandboxStats and ListPodSandboxStats: pod-level CPU, memory and process count from the pod
cgroup, network rx/tx per interface from the pod's network namespace, and the stats of its
containers (from the container service, through the `container_stats` hook).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups import stats as cgstats
from criruntime.errors import NotFound
from criruntime.sandbox import network_stats
from criruntime.sandbox.model import PodSandbox, SandboxState
from criruntime.sandbox.service import SandboxService


@dataclass
class PodContainers:
    """What pod stats need from a pod's containers."""

    stats: list[api.ContainerStats] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # running inits: a way into the pod's netns


# pod ids -> each pod's containers (set by the container service).
ContainerStatsHook = Callable[[list[str]], Awaitable[dict[str, PodContainers]]]


def _network(sandbox: PodSandbox, pids: list[int]) -> api.NetworkUsage | None:
    if sandbox.host_network or not sandbox.netns_path:
        return None  # the node's own interfaces: kubelet takes those from the node
    timestamp = time.time_ns()
    interfaces = network_stats.read_pod_interfaces(sandbox.netns_path, pids)
    if interfaces is None:
        return None
    usage = api.NetworkUsage(
        timestamp=timestamp,
        interfaces=[
            api.NetworkInterfaceUsage(
                name=i.name,
                rx_bytes=api.UInt64Value(value=i.rx_bytes),
                rx_errors=api.UInt64Value(value=i.rx_errors),
                tx_bytes=api.UInt64Value(value=i.tx_bytes),
                tx_errors=api.UInt64Value(value=i.tx_errors),
            )
            for i in interfaces
        ],
    )
    # CNI plugins name the pod's interface eth0 (kubelet's default); else the first one.
    default = next((i for i in usage.interfaces if i.name == "eth0"), None)
    if default is None and usage.interfaces:
        default = usage.interfaces[0]
    if default is not None:
        usage.default_interface.CopyFrom(default)
    return usage


def _pod_figures(svc: SandboxService, sandbox: PodSandbox) -> api.LinuxPodSandboxStats:
    """Blocking: the pod cgroup's files."""
    linux = api.LinuxPodSandboxStats()
    figures = cgstats.read(svc.cgroupfs, sandbox.cgroup_parent, timestamp=time.time_ns())
    if figures is not None:
        rate = None
        if figures.cpu_usage_ns is not None:
            rate = svc.cpu_rates.rate(sandbox.id, figures.timestamp, figures.cpu_usage_ns)
        linux.cpu.CopyFrom(cgstats.cpu_usage(figures, rate))
        linux.memory.CopyFrom(cgstats.memory_usage(figures))
        if figures.pids is not None:
            linux.process.CopyFrom(
                api.ProcessUsage(
                    timestamp=figures.timestamp, process_count=api.UInt64Value(value=figures.pids)
                )
            )
    return linux


async def _stats(svc: SandboxService, sandboxes: list[PodSandbox]) -> list[api.PodSandboxStats]:
    if not sandboxes:
        return []

    # The pods' own cgroups are read while the container service reads its containers'; the
    # network comes last, through a process of each pod when one runs.
    async def of_containers() -> dict[str, PodContainers]:
        hook = svc.container_stats
        return await hook([s.id for s in sandboxes]) if hook is not None else {}

    containers_task = asyncio.ensure_future(of_containers())
    try:
        figures = await asyncio.to_thread(lambda: [_pod_figures(svc, s) for s in sandboxes])
    finally:
        containers = await containers_task

    def networks() -> list[api.NetworkUsage | None]:
        return [
            _network(s, (containers.get(s.id) or PodContainers()).pids) if s.ready else None
            for s in sandboxes
        ]

    found = []
    for sandbox, linux, network in zip(
        sandboxes, figures, await asyncio.to_thread(networks), strict=True
    ):
        linux.containers.extend((containers.get(sandbox.id) or PodContainers()).stats)
        if network is not None:
            linux.network.CopyFrom(network)
        found.append(
            api.PodSandboxStats(
                attributes=api.PodSandboxAttributes(
                    id=sandbox.id,
                    metadata=sandbox.metadata,
                    labels=sandbox.labels,
                    annotations=sandbox.annotations,
                ),
                linux=linux,
            )
        )
    return found


async def pod_sandbox_stats(
    svc: SandboxService, request: api.PodSandboxStatsRequest
) -> api.PodSandboxStatsResponse:
    sandbox = svc.store.get(request.pod_sandbox_id)
    if sandbox.creating:
        raise NotFound(f"pod sandbox {request.pod_sandbox_id!r} not found")
    [stats] = await _stats(svc, [sandbox])
    return api.PodSandboxStatsResponse(stats=stats)


async def list_pod_sandbox_stats(
    svc: SandboxService, request: api.ListPodSandboxStatsRequest
) -> api.ListPodSandboxStatsResponse:
    """Ready pods only, as containerd lists them: a stopped pod has no cgroup or netns left."""
    f = request.filter
    sandboxes = [
        s
        for s in svc.store.list(SandboxState.READY, id_prefix=f.id, labels=f.label_selector)
        if not s.creating
    ]
    found = await _stats(svc, sandboxes)
    if not (f.id or f.label_selector):
        svc.cpu_rates.keep_only({s.id for s in sandboxes})
    return api.ListPodSandboxStatsResponse(stats=found)

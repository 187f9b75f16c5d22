"""ContainerStats: one container's CPU, memory, swap and writable-layer figures.

CPU and memory come from the container's cgroup (the pod cgroup + the container id, the
cgroupsPath its OCI spec names), so a container that is not running has none; its attributes
and writable layer are still reported, as containerd reports them. Each figure's timestamp is
when it was read.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups import stats as cgstats
from criruntime.container.model import Container, ContainerState
from criruntime.container.service import ContainerService
from criruntime.errors import NotFound
from criruntime.image.image_fs_info import disk_usage


def cgroup_path(pod_cgroup: str, container_id: str) -> str:
    """The container's cgroup, as the OCI spec's cgroupsPath names it."""
    return os.path.join(pod_cgroup, container_id)


def _stats_of(svc: ContainerService, container: Container, pod_cgroup: str) -> api.ContainerStats:
    stats = api.ContainerStats(
        attributes=api.ContainerAttributes(
            id=container.id,
            metadata=container.config.metadata,
            labels=dict(container.config.labels),
            annotations=dict(container.config.annotations),
        )
    )
    figures = None
    if container.state is ContainerState.RUNNING:
        figures = cgstats.read(
            svc.cgroupfs, cgroup_path(pod_cgroup, container.id), timestamp=time.time_ns()
        )
    if figures is not None:
        rate = None
        if figures.cpu_usage_ns is not None:
            rate = svc.cpu_rates.rate(container.id, figures.timestamp, figures.cpu_usage_ns)
        stats.cpu.CopyFrom(cgstats.cpu_usage(figures, rate))
        stats.memory.CopyFrom(cgstats.memory_usage(figures))
        swap = cgstats.swap_usage(figures)
        if swap is not None:
            stats.swap.CopyFrom(swap)
    if container.storage_dir:
        timestamp = time.time_ns()
        used, inodes = disk_usage(os.path.join(container.storage_dir, "upper"))
        stats.writable_layer.CopyFrom(
            api.FilesystemUsage(
                timestamp=timestamp,
                fs_id=api.FilesystemIdentifier(mountpoint=svc.storage_root),
                used_bytes=api.UInt64Value(value=used),
                inodes_used=api.UInt64Value(value=inodes),
            )
        )
    return stats


def collect(
    svc: ContainerService, containers: Iterable[tuple[Container, str]]
) -> list[api.ContainerStats]:
    """Stats of each (container, its pod's cgroup). Blocking: file reads and a walk of each
    writable layer; run it off the event loop."""
    return [_stats_of(svc, c, pod_cgroup) for c, pod_cgroup in containers]


async def pod_cgroups(svc: ContainerService, pod_ids: Iterable[str]) -> dict[str, str]:
    """Each pod's cgroup; a pod removed meanwhile is left out."""
    found: dict[str, str] = {}
    for pod_id in set(pod_ids):
        try:
            found[pod_id] = (await svc.pods(pod_id)).cgroup_parent
        except NotFound:
            continue
    return found


async def container_stats(
    svc: ContainerService, request: api.ContainerStatsRequest
) -> api.ContainerStatsResponse:
    await svc.ensure_recovered()
    container = svc.get(request.container_id)
    if container.state is ContainerState.CREATING:
        raise NotFound(f"container {request.container_id!r} not found")
    cgroups = await pod_cgroups(svc, [container.pod_id])
    if container.pod_id not in cgroups:
        raise NotFound(f"container {container.id}: pod sandbox {container.pod_id} not found")
    [stats] = await asyncio.to_thread(collect, svc, [(container, cgroups[container.pod_id])])
    return api.ContainerStatsResponse(stats=stats)

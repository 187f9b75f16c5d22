"""UpdatePodSandboxResources: new pod-level limits (the containers' sum plus the RuntimeClass
overhead, as at RunPodSandbox) written to the pod cgroup, and kept in the pod's stored config so
PodSandboxStatus and a restart see them. Checked like UpdateContainerResources first."""

from __future__ import annotations

import asyncio
import errno
import logging

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.limits import check_resources
from criruntime.errors import FailedPrecondition
from criruntime.sandbox.sandbox_run import pod_resources
from criruntime.sandbox.service import SandboxService

log = logging.getLogger("criruntime.sandbox")


async def update_pod_sandbox_resources(
    svc: SandboxService, request: api.UpdatePodSandboxResourcesRequest
) -> api.UpdatePodSandboxResourcesResponse:
    if request.HasField("resources"):
        check_resources(request.resources, "resources")
    if request.HasField("overhead"):
        check_resources(request.overhead, "overhead")
    await svc.ensure_recovered()
    sandbox = svc.store.get(request.pod_sandbox_id)
    async with svc.locked(sandbox.id):
        sandbox = svc.store.get(sandbox.id)
        if not sandbox.ready or sandbox.creating:
            raise FailedPrecondition(
                f"pod sandbox {sandbox.id} is not ready; only a ready pod's resources can change"
            )
        config = type(sandbox.config)()
        config.CopyFrom(sandbox.config)
        if request.HasField("resources"):
            config.linux.resources.CopyFrom(request.resources)
        if request.HasField("overhead"):
            config.linux.overhead.CopyFrom(request.overhead)
        warnings: list[str] = []
        limits = pod_resources(config.linux, svc.host_cgroups, warnings)
        for warning in warnings:
            log.warning("pod sandbox %s: %s", sandbox.id[:12], warning)
        if limits is not None:
            try:
                await asyncio.to_thread(svc.cgroupfs.apply, sandbox.cgroup_parent, limits)
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.EINVAL):
                    # e.g. a memory limit below what the pod uses now, or a cpuset its
                    # containers' cpusets do not fit in
                    raise FailedPrecondition(
                        f"pod sandbox {sandbox.id}: the kernel refused the new limits "
                        f"({e.strerror}: {e.filename})"
                    ) from None
                raise
        svc.store.update(sandbox.replace(config=config))
        log.info("updated pod sandbox %s resources", sandbox.id[:12])
    return api.UpdatePodSandboxResourcesResponse()

"""ExecSync: run a command in a running container and return its output and exit code.

The process gets the container's user, env, cwd and capabilities (config.json's process with
new args). Each stream is capped (16 MiB by default); a timeout SIGKILLs the process and is a
DeadlineExceeded error, which kubelet reads as a probe timeout.
"""

from __future__ import annotations

import json
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService
from criruntime.errors import FailedPrecondition, InvalidArgument
from criruntime.oci.runtime import BundlePaths


def read_process(bundle: str) -> dict[str, Any]:
    with open(BundlePaths(bundle).config) as f:
        process: dict[str, Any] = json.load(f)["process"]
    return process


async def exec_sync(svc: ContainerService, request: api.ExecSyncRequest) -> api.ExecSyncResponse:
    if not request.cmd:
        raise InvalidArgument("cmd must not be empty")
    await svc.ensure_recovered()
    container = svc.get(request.container_id)
    if container.state is not ContainerState.RUNNING:
        raise FailedPrecondition(f"container {container.id} is not running")
    process = read_process(container.bundle_dir)
    process["args"] = list(request.cmd)
    process["terminal"] = False
    process.pop("oomScoreAdj", None)
    result = await svc.runtime_for(container.runtime_handler).exec_sync(
        container.id,
        container.bundle_dir,
        process,
        time_limit=float(request.timeout) if request.timeout > 0 else None,
        max_output=svc.exec_output_limit,
    )
    return api.ExecSyncResponse(
        stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
    )

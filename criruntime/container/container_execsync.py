"""ExecSync: run a command in a running container and return its output and exit code.

The process gets the container's user, env, cwd and capabilities (config.json's process with
new args). Each stream is capped (16 MiB by default) and both together are trimmed to fit one
gRPC message; a timeout SIGKILLs the process and is a DeadlineExceeded error, which kubelet reads
as a probe timeout.
"""

from __future__ import annotations

import json
from typing import Any

from criruntime.api import MAX_MESSAGE
from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService
from criruntime.errors import FailedPrecondition, InvalidArgument
from criruntime.oci.runtime import BundlePaths

# Room in a response for what is not output: field tags, length prefixes, the exit code.
_OVERHEAD = 1024


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
    stdout, stderr = fit_output(result.stdout, result.stderr, MAX_MESSAGE - _OVERHEAD)
    return api.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=result.exit_code)


def fit_output(stdout: bytes, stderr: bytes, budget: int) -> tuple[bytes, bytes]:
    """Trims the two streams to `budget` bytes in all, so the response is one gRPC message kubelet
    accepts; stderr keeps at most half of it unless stdout needs less."""
    if len(stdout) + len(stderr) <= budget:
        return stdout, stderr
    stderr = stderr[: max(budget // 2, budget - len(stdout))]
    return stdout[: budget - len(stderr)], stderr

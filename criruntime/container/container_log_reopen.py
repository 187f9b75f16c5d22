"""ReopenContainerLog: after kubelet rotated the log file, conmon opens a new one."""

from __future__ import annotations

import asyncio
import os

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.model import ContainerState
from criruntime.container.service import ContainerService
from criruntime.errors import FailedPrecondition, Unknown

_WAIT_FOR_FILE = 2.0
_POLL = 0.01


# A stat on a local file: not worth a thread (ruff's ASYNC240 asks for one).
def _exists(path: str) -> bool:
    return os.path.exists(path)


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


async def reopen_container_log(
    svc: ContainerService, request: api.ReopenContainerLogRequest
) -> api.ReopenContainerLogResponse:
    await svc.ensure_recovered()
    container = svc.get(request.container_id)
    if container.state is not ContainerState.RUNNING:
        raise FailedPrecondition(f"container {container.id} is not running")
    directory = os.path.dirname(container.log_path)
    if container.log_path and not _is_dir(directory):
        # conmon exits when it cannot open the new file, and the container dies of SIGPIPE on
        # its next line: refuse here instead, as containerd does, and leave it running.
        raise FailedPrecondition(
            f"cannot reopen the log of container {container.id}: directory {directory} does "
            f"not exist"
        )
    svc.runtime_for(container.runtime_handler).reopen_log(container.bundle_dir)
    if container.log_path:
        # conmon reopens asynchronously; kubelet expects the new file once we answer.
        for _ in range(int(_WAIT_FOR_FILE / _POLL)):
            if _exists(container.log_path):
                break
            await asyncio.sleep(_POLL)
        else:
            raise Unknown(f"conmon did not reopen {container.log_path} within {_WAIT_FOR_FILE}s")
    return api.ReopenContainerLogResponse()

"""ListPodSandbox with CRI filters: ID (or unique prefix), state, label selector."""

from __future__ import annotations

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.sandbox.model import SandboxState
from criruntime.sandbox.service import SandboxService


def list_pod_sandbox(
    svc: SandboxService, request: api.ListPodSandboxRequest
) -> api.ListPodSandboxResponse:
    f = request.filter
    state = None
    if request.HasField("filter") and f.HasField("state"):
        state = (
            SandboxState.READY
            if f.state.state == api.PodSandboxState.SANDBOX_READY
            else SandboxState.NOTREADY
        )
    items = [
        api.PodSandbox(
            id=s.id,
            metadata=s.metadata,
            state=s.state.to_api(),
            created_at=s.created_at,
            labels=s.labels,
            annotations=s.annotations,
            runtime_handler=s.runtime_handler,
        )
        for s in svc.store.list(state, id_prefix=f.id, labels=f.label_selector)
        if not s.creating
    ]
    return api.ListPodSandboxResponse(items=items)

"""Version: who answers on this socket."""

from __future__ import annotations

from criruntime import RUNTIME_API_VERSION, RUNTIME_NAME, __version__
from criruntime.api.runtime.v1 import api_pb2 as api

# The kubelet-facing API version; every CRI runtime reports "0.1.0" here.
KUBELET_API_VERSION = "0.1.0"


def version() -> api.VersionResponse:
    return api.VersionResponse(
        version=KUBELET_API_VERSION,
        runtime_name=RUNTIME_NAME,
        runtime_version=__version__,
        runtime_api_version=RUNTIME_API_VERSION,
    )

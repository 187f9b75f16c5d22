"""Every RPC criruntime does not implement yet answers UNIMPLEMENTED and names itself."""

from __future__ import annotations

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.server.image_service import ImageServicer
from criruntime.server.runtime_service import RuntimeServicer
from criruntime.server.unimplemented import MARK
from tests.conftest import Daemon

SERVICERS = {"RuntimeService": RuntimeServicer, "ImageService": ImageServicer}


def _placeholders() -> list[tuple[str, str, bool]]:
    found = []
    for service, cls in SERVICERS.items():
        for method in api.DESCRIPTOR.services_by_name[service].methods:
            if getattr(getattr(cls, method.name), MARK, False):
                found.append((service, method.name, method.server_streaming))
    return found


def test_generated_base_default_is_never_exposed() -> None:
    # Every RPC is either ours or a placeholder that names itself.
    for service, cls in SERVICERS.items():
        for method in api.DESCRIPTOR.services_by_name[service].methods:
            assert "Method not implemented" not in (getattr(cls, method.name).__doc__ or "")
            assert getattr(cls, method.name).__qualname__.split(".")[0] != f"{service}Servicer"


@pytest.mark.parametrize(("service", "method", "streaming"), _placeholders())
def test_placeholder_answers_unimplemented(
    shared_daemon: Daemon, service: str, method: str, streaming: bool
) -> None:
    desc = api.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    request_cls = getattr(api, desc.input_type.name)
    output_cls = getattr(api, desc.output_type.name)
    path = f"/runtime.v1.{service}/{method}"
    channel = shared_daemon.channel
    assert channel is not None
    with pytest.raises(grpc.RpcError) as err:
        if streaming:
            call = channel.unary_stream(path, request_cls.SerializeToString, output_cls.FromString)
            list(call(request_cls(), timeout=10))
        else:
            channel.unary_unary(path, request_cls.SerializeToString, output_cls.FromString)(
                request_cls(), timeout=10
            )
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert method in (err.value.details() or "")

"""Every RPC criruntime does not implement yet answers UNIMPLEMENTED and names itself."""

from __future__ import annotations

import asyncio

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc
from criruntime.errors import Unimplemented
from criruntime.server.image_service import ImageServicer
from criruntime.server.runtime_service import RuntimeServicer
from criruntime.server.unimplemented import MARK, fill_unimplemented

SERVICERS = {"RuntimeService": RuntimeServicer, "ImageService": ImageServicer}


def test_generated_base_default_is_never_exposed() -> None:
    # Every RPC is either ours or a placeholder that names itself.
    for service, cls in SERVICERS.items():
        for method in api.DESCRIPTOR.services_by_name[service].methods:
            assert "Method not implemented" not in (getattr(cls, method.name).__doc__ or "")
            assert getattr(cls, method.name).__qualname__.split(".")[0] != f"{service}Servicer"


def test_placeholders_answer_unimplemented_and_name_the_rpc() -> None:
    # Every CRI RPC is served today (streaming was the last), so this checks the placeholders
    # on a bare servicer: an RPC a newer API adds answers like this until it is served.
    desc = api.DESCRIPTOR.services_by_name["RuntimeService"]

    @fill_unimplemented(desc, api_grpc.RuntimeServiceServicer)
    class Bare(api_grpc.RuntimeServiceServicer):  # type: ignore[misc]  # generated, untyped
        pass

    for method in desc.methods:
        rpc = getattr(Bare, method.name)
        assert getattr(rpc, MARK)
        with pytest.raises(Unimplemented, match=method.name):
            if method.server_streaming:
                asyncio.run(anext(rpc(Bare(), None, None)))
            else:
                asyncio.run(rpc(Bare(), None, None))

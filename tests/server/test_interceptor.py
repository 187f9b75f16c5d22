"""Error mapping: typed domain errors keep their code; anything else is INTERNAL, not a crash."""

from __future__ import annotations

import asyncio
import errno
from typing import Any, cast

import grpc
import pytest
from google.protobuf.message import Message

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import AlreadyExists, CriError, InvalidArgument, NotFound
from criruntime.server.interceptor import _wrap_stream, _wrap_unary


class _Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise _Aborted


def _call_unary(exc: BaseException, request: Message | None = None) -> FakeContext:
    async def behavior(request: Any, context: Any) -> Any:
        raise exc

    context = FakeContext()
    wrapped = _wrap_unary(behavior, "/runtime.v1.RuntimeService/Version")

    async def call() -> Any:
        return await wrapped(request or api.VersionRequest(), cast(Any, context))

    with pytest.raises(_Aborted):
        asyncio.run(call())
    return context


@pytest.mark.parametrize("error", [InvalidArgument("bad"), NotFound("gone"), AlreadyExists("dup")])
def test_domain_errors_keep_their_code_and_message(error: CriError) -> None:
    assert _call_unary(error).aborted == (error.code, str(error))


def test_unexpected_errors_become_internal_naming_the_rpc() -> None:
    code, details = _call_unary(KeyError("k")).aborted or (None, "")
    assert code == grpc.StatusCode.INTERNAL
    assert details.startswith("internal error in Version")


def test_a_full_disk_is_resource_exhausted_naming_the_file() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/var/lib/criruntime/x")
    assert _call_unary(full).aborted == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Version: No space left on device: /var/lib/criruntime/x",
    )


def test_stream_errors_are_mapped_too() -> None:
    async def behavior(request: Any, context: Any) -> Any:
        yield 1
        raise NotFound("no such pod")

    async def drain(context: FakeContext) -> list[Any]:
        wrapped = _wrap_stream(behavior, "/runtime.v1.RuntimeService/StreamPodSandboxes")
        request = api.StreamPodSandboxesRequest()
        return [item async for item in wrapped(request, cast(Any, context))]

    context = FakeContext()
    with pytest.raises(_Aborted):
        asyncio.run(drain(context))
    assert context.aborted == (grpc.StatusCode.NOT_FOUND, "no such pod")


def test_nul_bytes_are_refused_naming_the_field() -> None:
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="c"),
        envs=[api.KeyValue(key="A", value="1"), api.KeyValue(key="B\0", value="2")],
    )
    request = api.CreateContainerRequest(pod_sandbox_id="p", config=config)
    # The behavior never runs: the request is refused before it.
    assert _call_unary(AssertionError("ran"), request).aborted == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "config.envs[1].key contains a NUL byte",
    )
    labels = api.ListContainersRequest(filter=api.ContainerFilter(label_selector={"a": "x\0"}))
    code, details = _call_unary(AssertionError("ran"), labels).aborted or (None, "")
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "filter.label_selector['a'] contains a NUL byte",
    )
    clean = api.ExecSyncRequest(container_id="c", cmd=["sh", "-c", "echo"])
    assert _call_unary(NotFound("ran"), clean).aborted == (grpc.StatusCode.NOT_FOUND, "ran")

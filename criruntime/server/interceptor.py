"""One interceptor for every RPC: request id, logging, metrics, request validation, and domain
error → gRPC status.

Every request meets validation.validate before its verb runs, and a body that does not decode
is INVALID_ARGUMENT, not UNKNOWN with the decoder's words. Servicers raise typed errors from
criruntime.errors; this is the only place they become status codes, so every RPC answers bad
input the same way. An unexpected bug is INTERNAL with the request id (its traceback goes to the
log, never to the client) and never takes the daemon down. No message is longer than
MAX_DETAILS: clients refuse statuses past 16 KiB of metadata.
"""

from __future__ import annotations

import errno
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from criruntime.errors import CriError, InvalidArgument
from criruntime.observability import logging as obs_logging
from criruntime.observability import metrics
from criruntime.server.validation import validate

log = logging.getLogger("criruntime.rpc")

MAX_DETAILS = 1024  # characters of a status message
UnaryBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]

# Polled constantly by kubelet; logged at debug so they don't drown the interesting calls.
_QUIET = {
    "Version", "Status", "ListPodSandbox", "ListContainers", "ListImages", "ImageFsInfo",
    "ListContainerStats", "ListPodSandboxStats", "ContainerStatus", "PodSandboxStatus",
    "ImageStatus",
}  # fmt: skip


class _Call:
    """Book-keeping for one RPC: its id, timing, outcome."""

    def __init__(self, full_method: str) -> None:
        _, service, method = full_method.split("/")
        self.service = service.rsplit(".", 1)[-1]
        self.method = method
        self.code = grpc.StatusCode.OK
        self.message = ""
        self.started = time.monotonic()
        self.token = obs_logging.request_id.set(secrets.token_hex(6))

    def fail(self, exc: BaseException) -> tuple[grpc.StatusCode, str]:
        if isinstance(exc, CriError):
            self.code, self.message = exc.code, _truncate(str(exc))
            return exc.code, self.message
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # A full disk is the node's state, not a bug: say where, and that retrying can work.
            where = f": {exc.filename}" if exc.filename else ""
            self.code = grpc.StatusCode.RESOURCE_EXHAUSTED
            self.message = _truncate(f"{self.method}: {exc.strerror}{where}")
            log.error("%s", self.message)
            return self.code, self.message
        self.code, self.message = (
            grpc.StatusCode.INTERNAL,
            f"internal error in {self.method} (request {obs_logging.request_id.get()}); "
            "the daemon log has the details",
        )
        log.exception("%s failed with an unexpected error", self.method)
        return self.code, self.message

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        metrics.observe(self.service, self.method, self.code.name, elapsed)
        level = (
            logging.DEBUG
            if self.method in _QUIET and self.code == grpc.StatusCode.OK
            else logging.INFO
        )
        outcome = f"{self.code.name}: {self.message}" if self.message else self.code.name
        log.log(level, "%s %s", self.method, outcome, extra={"ms": round(elapsed * 1000, 2)})
        obs_logging.request_id.reset(self.token)


def _truncate(message: str) -> str:
    if len(message) <= MAX_DETAILS:
        return message
    return message[: MAX_DETAILS - 1] + "…"


class _Undecodable:
    """Stands for a request body that does not parse, so the handler can answer for it."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _decoding(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:  # protobuf raises DecodeError, and others on hostile input
            return _Undecodable(e)

    return decode


def _check_request(request: Any, method: str) -> None:
    if isinstance(request, _Undecodable):
        log.debug("%s: undecodable request: %s", method, request.error)
        raise InvalidArgument(f"the {method} request body is not a valid protobuf message")
    validate(request)


def _wrap_unary(behavior: UnaryBehavior, full_method: str) -> UnaryBehavior:
    async def handler(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        call = _Call(full_method)
        try:
            _check_request(request, call.method)
            return await behavior(request, context)
        except aio.AbortError:
            raise
        except Exception as exc:
            code, message = call.fail(exc)
            await context.abort(code, message)
        finally:
            call.finish()

    return handler


def _wrap_stream(behavior: StreamBehavior, full_method: str) -> StreamBehavior:
    async def handler(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call = _Call(full_method)
        try:
            _check_request(request, call.method)
            async for item in behavior(request, context):
                yield item
        except aio.AbortError:
            raise
        except Exception as exc:
            code, message = call.fail(exc)
            await context.abort(code, message)
        finally:
            call.finish()

    return handler


class CriInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=_decoding(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=_decoding(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler  # the CRI has no client-streaming RPCs

"""Typed domain errors. The server maps each to one gRPC status code, in one place."""

from __future__ import annotations

import grpc


class CriError(Exception):
    """Base of every error a CRI caller should see with a specific status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(CriError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CriError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CriError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CriError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(CriError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(CriError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(CriError):
    code = grpc.StatusCode.UNAVAILABLE


class Unknown(CriError):
    """An outside component (a CNI plugin, an OCI runtime) failed; its own message is kept."""

    code = grpc.StatusCode.UNKNOWN


class Unimplemented(CriError):
    code = grpc.StatusCode.UNIMPLEMENTED


QUOTE_LIMIT = 64  # characters of client input an error message repeats


def quote(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`value` as an error message quotes client input: repr'd, and only a short prefix of it,
    so a 1 MB id never makes a status bigger than clients accept (16 KiB of metadata)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"

"""Answers UNIMPLEMENTED, naming the RPC, for every CRI RPC a servicer does not define yet."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from google.protobuf.descriptor import ServiceDescriptor

from criruntime.errors import Unimplemented

T = TypeVar("T", bound=type)


# Set on generated placeholders so tests can tell which RPCs must answer UNIMPLEMENTED.
MARK = "__cri_unimplemented__"


def _unary(name: str) -> Any:
    async def rpc(self: object, request: object, context: object) -> object:
        raise Unimplemented(f"{name} is not implemented by criruntime")

    setattr(rpc, MARK, True)
    return rpc


def _stream(name: str) -> Any:
    async def rpc(self: object, request: object, context: object) -> AsyncIterator[object]:
        raise Unimplemented(f"{name} is not implemented by criruntime")
        yield  # makes this an async generator, as unary-stream handlers are

    setattr(rpc, MARK, True)
    return rpc


def fill_unimplemented(service: ServiceDescriptor, base: type) -> Any:
    """Class decorator: every RPC of `service` the class leaves at the generated `base` default
    gets a handler raising Unimplemented with the RPC's name (the default says only
    "Method not implemented!")."""

    def decorate(cls: T) -> T:
        for method in service.methods:
            if getattr(cls, method.name) is getattr(base, method.name):
                factory = _stream if method.server_streaming else _unary
                setattr(cls, method.name, factory(method.name))
        assert not inspect.isabstract(cls)
        return cls

    return decorate

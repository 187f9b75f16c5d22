"""runtime.v1.ImageService: thin handlers that call the image domain code."""

from __future__ import annotations

from grpc import aio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc
from criruntime.server.services import Services
from criruntime.server.unimplemented import fill_unimplemented

Context = aio.ServicerContext[object, object]


@fill_unimplemented(api.DESCRIPTOR.services_by_name["ImageService"], api_grpc.ImageServiceServicer)
class ImageServicer(api_grpc.ImageServiceServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, services: Services) -> None:
        self._s = services

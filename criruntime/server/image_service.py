"""runtime.v1.ImageService: thin handlers that call the image domain code."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc
from criruntime.server.paging import pages
from criruntime.server.services import Services
from criruntime.server.unimplemented import fill_unimplemented

Context = aio.ServicerContext[object, object]


@fill_unimplemented(api.DESCRIPTOR.services_by_name["ImageService"], api_grpc.ImageServiceServicer)
class ImageServicer(api_grpc.ImageServiceServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, services: Services) -> None:
        self._image = services.image

    async def PullImage(
        self, request: api.PullImageRequest, context: Context
    ) -> api.PullImageResponse:
        return await self._image.pull_image(request)

    async def ListImages(
        self, request: api.ListImagesRequest, context: Context
    ) -> api.ListImagesResponse:
        return await self._image.list_images(request)

    async def StreamImages(
        self, request: api.StreamImagesRequest, context: Context
    ) -> AsyncIterator[api.StreamImagesResponse]:
        found = await self._image.list_images(api.ListImagesRequest(filter=request.filter))
        for page in pages(found.images):
            yield api.StreamImagesResponse(images=page)

    async def ImageStatus(
        self, request: api.ImageStatusRequest, context: Context
    ) -> api.ImageStatusResponse:
        return await self._image.image_status(request)

    async def RemoveImage(
        self, request: api.RemoveImageRequest, context: Context
    ) -> api.RemoveImageResponse:
        return await self._image.remove_image(request)

    async def ImageFsInfo(
        self, request: api.ImageFsInfoRequest, context: Context
    ) -> api.ImageFsInfoResponse:
        return await self._image.image_fs_info(request)

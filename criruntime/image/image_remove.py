"""RemoveImage: by any name or ID, removes the image with every tag; absent is success."""

from __future__ import annotations

from typing import TYPE_CHECKING

from criruntime.api.runtime.v1 import api_pb2 as api

if TYPE_CHECKING:
    from criruntime.image.service import ImageService


async def remove_image(
    svc: ImageService, request: api.RemoveImageRequest
) -> api.RemoveImageResponse:
    record = svc.images.resolve(request.image.image)
    # Concurrent removes of one image: whoever loses the race finds nothing, and succeeds too.
    if record is not None and svc.images.remove(record.id):
        # The image is gone once the row is; disk space comes back with the GC round.
        await svc.collect_garbage()
    return api.RemoveImageResponse()

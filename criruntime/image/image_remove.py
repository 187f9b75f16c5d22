"""RemoveImage: by any name or ID, removes the image with every tag; absent is success.

An image a container mounts as an image volume is refused (FAILED_PRECONDITION) until that
container is removed, as CRI-O refuses an image in use: the volume's content must stay what
ImageStatus says. An image only run as a container's root may go; its layers stay leased.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import FailedPrecondition

if TYPE_CHECKING:
    from criruntime.image.service import ImageService


async def remove_image(
    svc: ImageService, request: api.RemoveImageRequest
) -> api.RemoveImageResponse:
    record = svc.images.resolve(request.image.image)
    if record is not None and (users := svc.images.volume_users(record.id)):
        raise FailedPrecondition(
            f"image {record.id} is mounted as an image volume by container {users[0]}; "
            "remove the container first"
        )
    # Concurrent removes of one image: whoever loses the race finds nothing, and succeeds too.
    if record is not None and svc.images.remove(record.id):
        # The image is gone once the row is; disk space comes back with the GC round.
        await svc.collect_garbage()
    return api.RemoveImageResponse()

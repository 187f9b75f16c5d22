"""ListImages: every stored image, or the one a filter names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.image.image_status import cri_image

if TYPE_CHECKING:
    from criruntime.image.service import ImageService


async def list_images(svc: ImageService, request: api.ListImagesRequest) -> api.ListImagesResponse:
    wanted = request.filter.image.image
    if wanted:
        record = svc.images.resolve(wanted)
        records = [record] if record is not None else []
    else:
        records = svc.images.all()
    pinned = svc.images.volume_images() if records else set()
    return api.ListImagesResponse(images=[cri_image(r, r.id in pinned) for r in records])

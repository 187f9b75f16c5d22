"""ImageStatus, and the one conversion of a stored image into a CRI `Image` (ListImages too)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.image.image_store import ImageRecord

if TYPE_CHECKING:
    from criruntime.image.service import ImageService


def user_of(image_user: str) -> tuple[int | None, str]:
    """(uid, username) from an image USER: `1002`, `www-data`, `1003:1004`, `www-data:1004`.

    Only the user part counts, as in containerd; a name is resolved later, in the container's
    own /etc/passwd, because the image's files are the only authority on it.
    """
    user = image_user.split(":", 1)[0]
    if not user:
        return None, ""
    if user.isdigit():
        return int(user), ""
    return None, user


def cri_image(record: ImageRecord, pinned: bool = False) -> api.Image:
    """`pinned` while a container mounts the image as a volume: kubelet's image GC skips it."""
    uid, username = user_of(record.user)
    image = api.Image(
        id=record.id,
        repo_tags=record.repo_tags,
        repo_digests=record.repo_digests,
        size=record.size,
        username=username,
        spec=api.ImageSpec(image=record.id),
        pinned=pinned,
    )
    if uid is not None:
        image.uid.value = uid
    return image


def verbose_info(record: ImageRecord) -> dict[str, str]:
    info = {
        "imageSpec": record.config,
        "manifest": record.manifest,
        "manifestDigest": record.manifest_digest,
        "chainIDs": record.chain_ids,
        "createdAt": record.created_at,
    }
    return {"info": json.dumps(info)}


async def image_status(
    svc: ImageService, request: api.ImageStatusRequest
) -> api.ImageStatusResponse:
    record = svc.images.resolve(request.image.image)
    if record is None:
        # CRI: a missing image is an empty answer, which kubelet reads as "pull it".
        return api.ImageStatusResponse()
    pinned = bool(svc.images.volume_users(record.id))
    response = api.ImageStatusResponse(image=cri_image(record, pinned))
    if request.verbose:
        response.info.update(verbose_info(record))
    return response

"""How a container names its image in ContainerStatus and ListContainers, as containerd does.

The names are read from the image store when asked, not frozen at create time: a tag pulled or
moved later shows up, and what kubelet compares (ImageStatus id and repo digests) always agrees.
Stored names are the fallback once the image itself is gone.

- ContainerStatus: image = a tag of the image (else a repo digest, else the name it was created
  with); image_ref = a repo digest (else the image ID); image_id = the image ID.
- ListContainers: image_ref = image_id = the image ID, which kubelet's image GC matches against
  ListImages ids to know which images are in use.
"""

from __future__ import annotations

from dataclasses import dataclass

from criruntime.container.model import Container
from criruntime.container.providers import ImageInfo, ImageLookup
from criruntime.errors import NotFound


@dataclass(frozen=True)
class ImageNames:
    image: str  # ImageSpec.image
    ref: str  # ContainerStatus.image_ref
    id: str  # the image config digest


class ImageNamer:
    """Resolves containers' images, each image once per instance (one per RPC)."""

    def __init__(self, lookup: ImageLookup) -> None:
        self._lookup = lookup
        self._seen: dict[str, ImageInfo | None] = {}

    async def _image(self, image_id: str) -> ImageInfo | None:
        if image_id not in self._seen:
            try:
                info: ImageInfo | None = await self._lookup(image_id)
            except NotFound:
                info = None
            # An ID prefix could resolve to another image only if ours is gone: check it is ours.
            self._seen[image_id] = info if info is not None and info.id == image_id else None
        return self._seen[image_id]

    async def names(self, container: Container) -> ImageNames:
        image = await self._image(container.image_id)
        if image is None:
            return ImageNames(container.image_name, container.image_ref, container.image_id)
        name = (image.repo_tags or image.repo_digests or [container.image_name])[0]
        ref = image.repo_digests[0] if image.repo_digests else image.id
        return ImageNames(name, ref, image.id)

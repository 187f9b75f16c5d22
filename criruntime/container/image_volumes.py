"""Image volumes (KEP-4639): a CRI Mount naming an image instead of a host path.

The image, pulled beforehand by kubelet like any other, is mounted read-only, noexec, nosuid
and nodev under the bundle (an overlay of its layers with no upper dir, so nothing is copied)
and bind-mounted at the container path, or its image_sub_path, as containerd and CRI-O do.
Its layers are leased with the container's own, and the container records the image ID:
ImageStatus reports the image pinned and RemoveImage refuses it while the container exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import idmapped, rootfs
from criruntime.container.providers import ImageInfo, ImageLookup
from criruntime.errors import InvalidArgument, NotFound


@dataclass(frozen=True)
class ImageVolume:
    container_path: str
    image: ImageInfo
    sub_path: str


async def resolve(mounts: list[api.Mount], lookup: ImageLookup) -> list[ImageVolume]:
    """The image mounts of a container config, checked and with their images found."""
    volumes = []
    for m in mounts:
        if not m.HasField("image"):
            continue
        sub_path = _checked_sub_path(m)
        try:
            image = await lookup(m.image.image)
        except NotFound:
            raise NotFound(
                f"{_where(m)}: image {m.image.image!r} not found; pull it first"
            ) from None
        volumes.append(ImageVolume(m.container_path, image, sub_path))
    return volumes


def _where(m: api.Mount) -> str:
    return f"image volume at {m.container_path or '(no container_path)'}"


def _checked_sub_path(m: api.Mount) -> str:
    """Refuses what cannot be honoured; returns the normalised image_sub_path."""
    if not m.image.image:
        raise InvalidArgument(f"{_where(m)}: mount.image names no image")
    if m.host_path:
        raise InvalidArgument(f"{_where(m)}: host_path must be empty for an image mount")
    if not m.readonly:
        raise InvalidArgument(f"{_where(m)}: an image mount must be readonly")
    sub_path = os.path.normpath(m.image_sub_path) if m.image_sub_path else ""
    if sub_path and (os.path.isabs(sub_path) or sub_path.split(os.sep)[0] == ".."):
        raise InvalidArgument(f"{_where(m)}: image_sub_path {m.image_sub_path!r} leaves the image")
    return sub_path


def mount_all(
    bundle: str, volumes: list[ImageVolume], userns_path: str | None = None
) -> dict[str, str]:
    """Mounts each volume's image under the bundle (its layers idmapped through the pod's user
    namespace, when it has one); returns container path → host source. On failure, whatever
    was mounted is for `rootfs.unmount_aux` to undo."""
    sources = {}
    base = rootfs.aux_dir(bundle, "image-volumes")
    for n, volume in enumerate(volumes):
        target = os.path.join(base, str(n))
        layers = volume.image.layer_dirs
        if userns_path is not None:
            layers = idmapped.idmapped_layers(layers, f"{target}-layers", userns_path)
        try:
            rootfs.mount_layers_readonly(layers, os.path.join(base, "empty"), target)
        except OSError as e:
            raise InvalidArgument(
                f"image volume at {volume.container_path}: mounting image {volume.image.id} "
                f"failed: {e.strerror or e}"
            ) from None
        sources[os.path.normpath(volume.container_path)] = _sub_dir(target, volume)
    return sources


def _sub_dir(root: str, volume: ImageVolume) -> str:
    """The image_sub_path inside the mounted image: a directory, reached without leaving it
    (symlinks resolve against the image's root, as they would inside a container)."""
    if not volume.sub_path:
        return root
    path = root
    for part in volume.sub_path.split(os.sep):
        path = os.path.join(path, part)
        hops = 0
        while os.path.islink(path):
            hops += 1
            link = os.readlink(path)
            parent = root if os.path.isabs(link) else os.path.dirname(path)
            path = os.path.normpath(os.path.join(parent, link.lstrip("/")))
            if hops > 40 or not (path == root or path.startswith(root + os.sep)):
                path = ""
                break
        if not path:
            break
    if not path or not os.path.isdir(path):
        raise InvalidArgument(
            f"image volume at {volume.container_path}: image_sub_path {volume.sub_path!r} is "
            f"not a directory in image {volume.image.id}"
        )
    return path

"""Idmapped mounts for containers of a pod with its own user namespace (KEP-127).

runc 1.1 cannot idmap mounts itself, so the daemon prepares them with the new mount API
(native/mount_api.py) through the pod's pinned user namespace, and hands runc plain paths:

- the rootfs: each image layer idmapped under <bundle>/mounts/layers/<n>, the overlay mounted
  over those, its upper dir owned by the mapped root. The image's root-owned files are root
  inside and the mapped id outside, no layer is chowned, and what the container writes lands
  in the upper dir as the mapped ids.
- every volume (a CRI mount with a host path): an idmapped copy under <bundle>/mounts/volumes,
  so a file the host owns as root is root inside, and root inside writes it as root.
- image volumes: their layers idmapped the same way under the read-only overlay.

All of it goes with rootfs.unmount_aux.
"""

from __future__ import annotations

import os
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import rootfs
from criruntime.container.providers import PodInfo
from criruntime.errors import FailedPrecondition, InvalidArgument
from criruntime.native import mount_api


def _userns(pod: PodInfo) -> tuple[str, int, int]:
    assert pod.userns_path is not None and pod.userns is not None
    return pod.userns_path, pod.userns.host_uid(0), pod.userns.host_gid(0)


def mount_rootfs(
    lower_dirs: list[str], upper: str, work: str, target: str, bundle: str, pod: PodInfo
) -> None:
    userns_path, root_uid, root_gid = _userns(pod)
    os.makedirs(upper, mode=0o755, exist_ok=True)
    os.chown(upper, root_uid, root_gid)  # the rootfs' own root dir: root's inside
    layers = idmapped_layers(lower_dirs, rootfs.aux_dir(bundle, "layers"), userns_path)
    rootfs.mount_overlay(layers, upper, work, target)


def idmapped_layers(lower_dirs: list[str], under: str, userns_path: str) -> list[str]:
    """Each layer idmapped at under/<n>; returns those paths, lowest first."""
    layers = []
    for n, layer in enumerate(lower_dirs):
        mapped = os.path.join(under, str(n))
        os.makedirs(mapped, mode=0o755)
        try:
            mount_api.idmapped_clone(layer, mapped, userns_path)
        except OSError as e:
            raise FailedPrecondition(
                f"image layer {os.path.realpath(layer)} cannot be idmapped for the pod's user "
                f"namespace: {e.strerror} (does its filesystem support idmapped mounts?)"
            ) from None
        layers.append(mapped)
    return layers


def idmap_volumes(spec: dict[str, Any], mounts: list[api.Mount], bundle: str, pod: PodInfo) -> None:
    """Points each volume's bind mount in `spec` at an idmapped copy of its source."""
    userns_path, _, _ = _userns(pod)
    volumes = {
        os.path.normpath(m.container_path): m
        for m in mounts
        if not m.HasField("image") and m.host_path
    }
    n = 0
    for entry in spec["mounts"]:
        mount = volumes.get(os.path.normpath(entry["destination"]))
        if mount is None or entry.get("type") != "bind":
            continue
        if mount.propagation != api.MountPropagation.PROPAGATION_PRIVATE:
            # An idmapped copy is a new mount, outside the host mount's peer group.
            raise InvalidArgument(
                f"mount {mount.container_path}: mount propagation is not supported in a pod "
                "with its own user namespace"
            )
        source = entry["source"]
        mapped = rootfs.aux_dir(bundle, "volumes", str(n))
        n += 1
        if os.path.isdir(source):
            os.makedirs(mapped, mode=0o755)
        else:
            os.makedirs(os.path.dirname(mapped), mode=0o755, exist_ok=True)
            with open(mapped, "x"):
                pass
        try:
            mount_api.idmapped_clone(source, mapped, userns_path)
        except OSError as e:
            raise FailedPrecondition(
                f"mount {mount.container_path}: host path {source} cannot be idmapped for the "
                f"pod's user namespace: {e.strerror} (does its filesystem support idmapped "
                "mounts?)"
            ) from None
        entry["source"] = mapped

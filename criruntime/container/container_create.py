"""CreateContainer: reserve the name, lease the image layers, mount the rootfs, write the OCI
spec (the bundle's config.json) and record the container CREATED.

As in containerd, nothing runs yet: conmon and `<runtime> create` happen in StartContainer, so a
created container has no process, no runtime state and no log file.

Each step registers its undo on an AsyncExitStack, popped only on success, so a failure half-way
leaves no row, mount or directory behind. A daemon killed half-way leaves a CREATING row that
recovery (restart.py) cleans up the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import idmapped, image_volumes, rootfs
from criruntime.container.model import Container, ContainerState, name_key
from criruntime.container.service import ContainerService
from criruntime.container.spec import ContainerSpecBuilder, SpecInputs
from criruntime.container.user import resolve_user
from criruntime.errors import FailedPrecondition, InvalidArgument, NotFound
from criruntime.observability import metrics
from criruntime.oci import features
from criruntime.oci.runtime import BundlePaths, release_mounts

log = logging.getLogger("criruntime.container")


def stop_signal(config: api.ContainerConfig, image_signal: str) -> int:
    """The CRI stop_signal, else the image's STOPSIGNAL, else SIGTERM."""
    if config.stop_signal != api.Signal.RUNTIME_DEFAULT:
        name = api.Signal.Name(config.stop_signal)
        return int(getattr(signal, name, signal.SIGTERM))
    text = image_signal.strip().upper()
    if not text:
        return int(signal.SIGTERM)
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    value = getattr(signal.Signals, name, None)
    if value is None:
        raise InvalidArgument(f"image STOPSIGNAL {image_signal!r} is not a signal")
    return int(value)


def write_spec(path: str, spec: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(spec, f)


def _log_path(directory: str, relative: str) -> str:
    if not directory or not relative:
        return ""
    path = os.path.normpath(os.path.join(directory, relative))
    if not path.startswith(os.path.normpath(directory) + os.sep):
        raise InvalidArgument(f"log_path {relative!r} escapes the pod's log directory")
    return path


@metrics.timed("container_create")
async def create_container(
    svc: ContainerService, request: api.CreateContainerRequest
) -> api.CreateContainerResponse:
    config = request.config
    if not config.metadata.name:
        raise InvalidArgument("container config must have metadata.name")
    if not config.image.image:
        raise InvalidArgument("container config must name an image")
    if not request.pod_sandbox_id:
        raise InvalidArgument("pod_sandbox_id must not be empty")
    await svc.ensure_recovered()
    pod = await svc.pods(request.pod_sandbox_id)
    if not pod.ready:
        raise FailedPrecondition(f"pod sandbox {pod.id} is not ready")
    try:
        image = await svc.images(config.image.image)
    except NotFound:
        raise NotFound(f"image {config.image.image!r} not found; pull it first") from None
    runtime = svc.runtime_for(pod.runtime_handler)
    security = config.linux.security_context
    if security.privileged and not pod.config.linux.security_context.privileged:
        raise InvalidArgument("a privileged container needs a privileged pod sandbox")
    target_pid = 0
    if security.namespace_options.pid == api.NamespaceMode.TARGET:
        target = svc.get(security.namespace_options.target_id)
        if target.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"pid namespace target {target.id} is not running")
        target_pid = target.pid
    volumes = await image_volumes.resolve(list(config.mounts), svc.images)

    container_id = secrets.token_hex(32)
    bundle = svc.bundle_dir(container_id)
    storage = svc.storage_dir(container_id)
    log_path = _log_path(pod.log_directory, config.log_path)
    image_name = config.image.image
    container = Container(
        id=container_id,
        pod_id=pod.id,
        name_key=name_key(config, pod.config),
        state=ContainerState.CREATING,
        created_at=time.time_ns(),
        config=config,
        image_id=image.id,
        runtime_handler=runtime.handler,
        bundle_dir=bundle,
        storage_dir=storage,
        log_path=log_path,
        image_name=image.repo_tags[0] if image.repo_tags else image_name,
        image_ref=image.repo_digests[0] if image.repo_digests else image.id,
        stop_signal=stop_signal(config, image.config.stop_signal),
        image_volumes=tuple(v.image.id for v in volumes),
    )
    leased = [*image.chain_ids, *(c for v in volumes for c in v.image.chain_ids)]
    svc.store.add(container, leased)  # AlreadyExists on a name clash; from here on, undo on failure
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as undo:
        undo.callback(svc.store.delete, container_id)
        undo.callback(rootfs.remove_dirs, bundle, storage)
        paths = BundlePaths(bundle)
        os.makedirs(bundle, mode=0o700)
        os.makedirs(storage, mode=0o700)
        undo.callback(rootfs.unmount_aux, bundle)  # idmapped layers, image volumes: last
        upper, work = os.path.join(storage, "upper"), os.path.join(storage, "work")
        if pod.userns_path is not None:
            os.chmod(bundle, 0o711)  # runc sets up the rootfs inside the pod's user namespace
            await loop.run_in_executor(
                None, idmapped.mount_rootfs, image.layer_dirs, upper, work, paths.rootfs, bundle,
                pod,
            )  # fmt: skip
        else:
            await loop.run_in_executor(
                None, rootfs.mount_overlay, image.layer_dirs, upper, work, paths.rootfs
            )
        undo.callback(rootfs.unmount, paths.rootfs)
        volume_sources = await loop.run_in_executor(
            None, image_volumes.mount_all, bundle, volumes, pod.userns_path
        )
        user = await loop.run_in_executor(
            None, resolve_user, paths.rootfs, security, image.config.user
        )
        # In threads: these read files a request or the image names (passwd, a seccomp profile).
        builder = ContainerSpecBuilder(
            SpecInputs(
                container_id=container_id,
                config=config,
                pod=pod,
                image=image.config,
                rootfs=paths.rootfs,
                user=user,
                host_cgroups=svc.host_cgroups_for(runtime),
                recursive_read_only_supported=features.probe(
                    runtime.binary
                ).recursive_read_only_mounts,
                target_pid=target_pid,
                image_volumes=volume_sources,
            )
        )
        built = await loop.run_in_executor(None, builder.build)
        if pod.userns_path is not None:
            await loop.run_in_executor(
                None, idmapped.idmap_volumes, built.spec, list(config.mounts), bundle, pod
            )
        for warning in built.warnings:
            log.warning("container %s: %s", container_id[:12], warning)
        undo.callback(release_mounts, bundle)
        await loop.run_in_executor(None, runtime.stage_mounts, built.spec, bundle)
        write_spec(paths.config, built.spec)
        container = container.replace(
            state=ContainerState.CREATED,
            uid=user.uid,
            gid=user.gid,
            supplemental_groups=tuple(user.additional_gids),
            warnings=tuple(built.warnings),
        )
        svc.store.update(container)
        undo.pop_all()
    log.info(
        "created container %s (%s) in pod %s", container_id[:12], config.metadata.name, pod.id[:12]
    )
    return api.CreateContainerResponse(container_id=container_id)

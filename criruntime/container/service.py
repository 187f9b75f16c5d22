"""ContainerService: the container lifecycle's wiring, built once at start-up.

The verbs live one per file (container_create.py, container_start.py, ...) and take this
object; it holds what they share: the store, the OCI runtimes per handler, the pod and image
lookups, per-container locks and the exit bookkeeping (`refresh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from criruntime.cgroups.cgroupfs import Cgroupfs
from criruntime.cgroups.host import HostCgroups
from criruntime.cgroups.stats import CpuRates
from criruntime.config import Config
from criruntime.container import attempt, rootfs
from criruntime.container.events import ContainerEvents
from criruntime.container.model import Container, ContainerState
from criruntime.container.providers import (
    ImageConfig,
    ImageInfo,
    ImageLookup,
    PodInfo,
    PodLookup,
)
from criruntime.container.store import ContainerStore
from criruntime.errors import InvalidArgument, NotFound
from criruntime.oci import idmap
from criruntime.oci import runtime as oci
from criruntime.oci.selection import RuntimeSet
from criruntime.store.db import Database

if TYPE_CHECKING:
    from criruntime.image.service import ImageService
    from criruntime.sandbox.model import PodSandbox
    from criruntime.sandbox.service import SandboxService

log = logging.getLogger("criruntime.container")

DEFAULT_EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024
# Removed containers' dirs are renamed into a trash dir inside their parent (so on the same
# filesystem: the bundle lives under the state dir, often a tmpfs, the storage under the root
# dir) and deleted from there in the background. Never a container id (ids are hex).
TRASH = ".trash"
# One thread deletes trees, in order: deletions never crowd out the default executor's users
# (unmounts, ...) and a burst of removals only queues up.
_DELETER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="criruntime-trash")


class PendingStop:
    """A stop in flight (container_stop.py): when its SIGKILL is due, and a wake-up for the
    waiter when a later, shorter stop moves that time forward."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic()
        self.moved = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def shorten(self, deadline: float) -> None:
        if deadline < self.deadline:
            self.deadline = deadline
            self.moved.set()


class ContainerService:
    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        pods: PodLookup,
        images: ImageLookup,
        host_cgroups: HostCgroups | None = None,
        exec_output_limit: int = DEFAULT_EXEC_OUTPUT_LIMIT,
        runtimes: RuntimeSet | None = None,
        cgroupfs: Cgroupfs | None = None,
    ) -> None:
        self.runtime_set = runtimes if runtimes is not None else RuntimeSet.open(config)
        config = self.runtime_set.resolve(config)
        self.config = config
        self.host_cgroups = host_cgroups or HostCgroups.detect(
            Cgroupfs.detect(), config.cgroups.tolerate_missing_hugetlb_controller
        )
        self.store = ContainerStore(db)
        self.events = ContainerEvents()
        self.events.seed(self.store.states())
        self.store.on_change = self._changed
        self.pods = pods
        self.images = images
        self.exec_output_limit = exec_output_limit
        self.cgroupfs = cgroupfs or Cgroupfs.detect()
        self.cpu_rates = CpuRates()  # the previous CPU sample of each container's cgroup
        self.runtimes = self.runtime_set.handlers
        self.bundles_dir = os.path.join(config.state, "containers")
        self.storage_root = os.path.join(config.root, "containers")
        os.makedirs(self.bundles_dir, mode=0o711, exist_ok=True)
        os.makedirs(self.storage_root, mode=0o711, exist_ok=True)
        self.trash_dirs = (
            os.path.join(self.bundles_dir, TRASH),
            os.path.join(self.storage_root, TRASH),
        )
        for trash in self.trash_dirs:
            os.makedirs(trash, mode=0o700, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self._recovery: asyncio.Task[None] | None = None
        self._reaping: dict[str, asyncio.Task[None]] = {}
        self.stops: dict[str, PendingStop] = {}
        self._deleting: set[asyncio.Task[None]] = set()
        self._watching: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def wired(
        cls,
        config: Config,
        db: Database,
        sandboxes: SandboxService,
        images: ImageService,
        runtimes: RuntimeSet,
    ) -> ContainerService:
        """Built on the real pod and image services; registers the pod-teardown hooks."""

        async def pod_lookup(pod_id: str) -> PodInfo:
            return pod_info(sandboxes.store.get(pod_id))

        async def image_lookup(ref: str) -> ImageInfo:
            record = images.images.resolve(ref)
            if record is None:
                raise NotFound(f"image {ref!r} not found")
            runtime = record.config.get("config") or {}
            return ImageInfo(
                id=record.id,
                config=ImageConfig(
                    env=list(runtime.get("Env") or []),
                    entrypoint=list(runtime.get("Entrypoint") or []),
                    cmd=list(runtime.get("Cmd") or []),
                    user=str(runtime.get("User") or ""),
                    working_dir=str(runtime.get("WorkingDir") or ""),
                    stop_signal=str(runtime.get("StopSignal") or ""),
                ),
                layer_dirs=images.layers.lower_dirs(record.chain_ids),
                chain_ids=list(record.chain_ids),
                repo_tags=list(record.repo_tags),
                repo_digests=list(record.repo_digests),
            )

        service = cls(
            config,
            db,
            pods=pod_lookup,
            images=image_lookup,
            host_cgroups=sandboxes.host_cgroups,
            runtimes=runtimes,
            cgroupfs=sandboxes.cgroupfs,
        )
        sandboxes.stop_containers = service.stop_pod_containers
        sandboxes.remove_containers = service.remove_pod_containers
        return service

    # ---- shared helpers ------------------------------------------------------------------------

    def runtime_for(self, handler: str) -> oci.OciRuntime:
        name = handler or self.config.default_runtime
        runtime = self.runtimes.get(name)
        if runtime is None:
            known = ", ".join(sorted(self.runtimes))
            raise InvalidArgument(f"unknown runtime handler {handler!r} (configured: {known})")
        return runtime

    def host_cgroups_for(self, runtime: oci.OciRuntime) -> HostCgroups:
        """The host cgroup rule as it applies to one runtime handler: a runtime that sees fewer
        controllers than the host has (crun in its private mount namespace) gets those only."""
        seen = runtime.cgroup_controllers
        if seen is None:
            return self.host_cgroups
        return dataclasses.replace(
            self.host_cgroups, controllers=self.host_cgroups.controllers & seen
        )

    def bundle_dir(self, container_id: str) -> str:
        return os.path.join(self.bundles_dir, container_id)

    def storage_dir(self, container_id: str) -> str:
        return os.path.join(self.storage_root, container_id)

    @contextlib.asynccontextmanager
    async def locked(self, container_id: str) -> AsyncIterator[None]:
        """Serialises the verbs that change one container."""
        async with self._locks.setdefault(container_id, asyncio.Lock()):
            yield

    def forget_lock(self, container_id: str) -> None:
        self._locks.pop(container_id, None)

    async def ensure_recovered(self) -> None:
        """Containers left by the previous daemon are reconciled before any verb runs."""
        if self._recovery is not None and self._recovery.done():
            return
        if self._recovery is None:
            from criruntime.container.restart import recover

            self._recovery = asyncio.get_running_loop().create_task(recover(self))
        await asyncio.shield(self._recovery)

    def refresh(self, container: Container) -> Container:
        """Folds in what conmon recorded while nobody asked: an exit code, an OOM kill. A
        container seen to have exited is reaped in the background, so Remove finds little to do.
        """
        if container.state not in (ContainerState.RUNNING, ContainerState.CREATED):
            return container
        if container.state is ContainerState.CREATED and not self._let_go(container):
            return container  # an exit file now is a cut-short attempt's, not the container's
        status = oci.read_exit_status(container.bundle_dir)
        if status is None and container.state is ContainerState.RUNNING:
            status = oci.lost_exit(container.bundle_dir, container.pid)
        if status is None:
            return container
        updated = exited(container, status)
        self.store.update(updated)
        self._reap_soon(updated)
        return updated

    def _let_go(self, container: Container) -> bool:
        """A CREATED container's start got as far as letting its process run."""
        bundle = container.bundle_dir
        runtime = self.runtimes.get(container.runtime_handler or self.config.default_runtime)
        return (
            attempt.started_at(bundle) is not None
            and not attempt.discarding(bundle)
            and not (runtime is not None and runtime.start_pending(container.id))
        )

    async def reap(self, container: Container) -> None:
        """What is due once a container's init has exited, as containerd does on a task exit:
        `<runtime> delete` (drops its state and cgroup) and unmounting the rootfs. Idempotent
        and cheap when already done (a stat each), so RemoveContainer only deletes files."""
        runtime = self.runtime_for(container.runtime_handler)
        if runtime.has_state(container.id):
            await runtime.delete(container.id, force=True)
        if container.bundle_dir:
            target = oci.BundlePaths(container.bundle_dir).rootfs
            if rootfs.mounted(target):
                await asyncio.get_running_loop().run_in_executor(None, rootfs.unmount, target)
            await asyncio.get_running_loop().run_in_executor(
                None, oci.release_mounts, container.bundle_dir
            )
            if rootfs.has_aux(container.bundle_dir):
                await asyncio.get_running_loop().run_in_executor(
                    None, rootfs.unmount_aux, container.bundle_dir
                )

    def _reap_task(self, container: Container) -> asyncio.Task[None]:
        """One reap at a time per container: a status refresh and a stop that both see the exit
        share the same `<runtime> delete`."""
        task = self._reaping.get(container.id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self.reap(container))
            self._reaping[container.id] = task
            task.add_done_callback(lambda t: self._reaped(container.id, t))
        return task

    def _reaped(self, container_id: str, task: asyncio.Task[None]) -> None:
        if self._reaping.get(container_id) is task:
            del self._reaping[container_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("reaping container %s failed: %s", container_id[:12], task.exception())

    async def reap_now(self, container: Container) -> None:
        await asyncio.shield(self._reap_task(container))

    def _reap_soon(self, container: Container) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: RemoveContainer (or recovery) reaps it instead
        _ = self._reap_task(container)  # kept in self._reaping until done

    # ---- state changes: events and the exit watch ----------------------------------------------

    def _changed(self, container_id: str, container: Container | None) -> None:
        if container is None:
            self.events.changed(container_id, "", None)
            return
        self.events.changed(container_id, container.pod_id, container.state)
        if container.state is ContainerState.RUNNING and self.events.subscribed:
            self.watch_exit(container)

    def watch_running(self) -> None:
        """Watches every running container's exit (the first event subscriber asks for it)."""
        for container in self.store.in_state(ContainerState.RUNNING):
            self.watch_exit(container)

    def watch_exit(self, container: Container) -> None:
        """Notices a running container's exit when it happens, as containerd's task monitor
        does, so its STOPPED event goes out then and not at the next List. One task per
        container, asleep on a pidfd of its init (no polling); only while someone subscribes
        to events (Evented PLEG is opt-in), else exits are seen at the next List or Status."""
        if container.pid <= 0 or container.id in self._watching:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test driving the service): nobody to tell
        task = loop.create_task(self._watch(container))
        self._watching[container.id] = task
        task.add_done_callback(lambda t: self._watched(container.id, t))

    async def _watch(self, container: Container) -> None:
        runtime = self.runtime_for(container.runtime_handler)
        await runtime.wait_exit(container.bundle_dir, None, container.pid)
        current = self.store.find(container.id)
        if current is not None:
            self.refresh(current)

    def _watched(self, container_id: str, task: asyncio.Task[None]) -> None:
        if self._watching.get(container_id) is task:
            del self._watching[container_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("watching container %s failed: %s", container_id[:12], task.exception())

    def stop_watching(self) -> None:
        """At shutdown: conmon records the exits while no daemon runs; recovery reads them."""
        for task in list(self._watching.values()):
            task.cancel()

    # ---- deleting a removed container's files -------------------------------------------------

    def discard_dirs(self, container: Container) -> None:
        """Moves the container's bundle and storage dirs into the trash (one rename each) and
        deletes them there in the background. Call once the row is gone: a daemon killed before
        the renames leaves dirs without a row, one killed after leaves trash, and recovery
        deletes both. A dir that cannot be renamed is deleted in place, also in the background.
        """
        bundle_trash, storage_trash = self.trash_dirs
        name = f"{container.id}.{secrets.token_hex(4)}"
        doomed = [
            moved
            for path, trash in (
                (container.bundle_dir, bundle_trash),
                (container.storage_dir, storage_trash),
            )
            if path and (moved := rootfs.move_to_trash(path, trash, name)) is not None
        ]
        if doomed:
            self._delete_soon(doomed)

    def empty_trash(self) -> None:
        """Deletes (in the background) what the trash holds; run by recovery, before any verb
        can add to it, for what a previous daemon left there."""
        doomed: list[str] = []
        for trash in self.trash_dirs:
            with contextlib.suppress(FileNotFoundError):
                doomed += [os.path.join(trash, name) for name in os.listdir(trash)]
        if doomed:
            log.info("deleting %d removed containers' dirs left in the trash", len(doomed))
            self._delete_soon(doomed)

    def _delete_soon(self, paths: list[str]) -> None:
        # A task (not a bare executor future), so whoever waits for the loop's tasks waits for it.
        task = asyncio.get_running_loop().create_task(self._delete(paths))
        self._deleting.add(task)
        task.add_done_callback(self._deleted)

    @staticmethod
    async def _delete(paths: list[str]) -> None:
        await asyncio.get_running_loop().run_in_executor(_DELETER, _delete_trees, paths)

    def _deleted(self, task: asyncio.Task[None]) -> None:
        self._deleting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("deleting removed container files failed: %s", task.exception())

    async def settle(self) -> None:
        """Waits for background reaps and deletions (tests, shutdown)."""
        while self._reaping or self._deleting:
            pending = [*self._reaping.values(), *self._deleting]
            await asyncio.gather(*pending, return_exceptions=True)

    def get(self, container_id: str) -> Container:
        return self.refresh(self.store.get(container_id))

    # ---- pod teardown hooks (called by the sandbox service) ------------------------------------

    async def stop_pod_containers(self, pod_id: str, grace: float) -> None:
        from criruntime.container.container_stop import stop

        await self.ensure_recovered()
        await asyncio.gather(*(stop(self, c.id, grace) for c in self.store.list(pod_id)))

    async def remove_pod_containers(self, pod_id: str, grace: float) -> None:
        from criruntime.container.container_remove import remove

        await self.ensure_recovered()
        await asyncio.gather(*(remove(self, c.id) for c in self.store.list(pod_id)))


def _delete_trees(paths: list[str]) -> None:
    """Deletes each tree, unmounting a rootfs first in case one is still mounted there; a tree
    that will not go is logged and left to the next recovery (the trash is emptied then)."""
    for path in paths:
        rootfs.unmount(oci.BundlePaths(path).rootfs)
        oci.release_mounts(path)  # never delete through a bind onto a host path
        rootfs.unmount_aux(path)
        try:
            rootfs.remove_dirs(path)
        except OSError as e:
            log.warning("deleting %s: %s", path, e)


def exited(container: Container, status: oci.ExitStatus) -> Container:
    message = ""
    if status.lost:
        reason = "Unknown"
        message = (
            "its monitor (conmon) is gone without recording the exit code (killed, or the "
            "node rebooted)"
        )
    elif status.oom_killed:
        reason = "OOMKilled"
    elif status.code == 0:
        reason = "Completed"
    else:
        reason = "Error"
    return container.replace(
        state=ContainerState.EXITED,
        exit_code=status.code,
        finished_at=max(status.finished_at, container.started_at),
        started_at=container.started_at or status.finished_at,
        reason=reason,
        message=message,
        pid=0,
    )


def pod_info(sandbox: PodSandbox) -> PodInfo:
    return PodInfo(
        id=sandbox.id,
        config=sandbox.config,
        ready=sandbox.ready and not sandbox.creating,
        runtime_handler=sandbox.runtime_handler,
        netns_path=sandbox.netns_path or None,
        ipc_ns_path=sandbox.ipc_ns_path or None,
        uts_ns_path=sandbox.uts_ns_path or None,
        pid_ns_path=sandbox.pid_ns_path or None,
        userns_path=sandbox.userns_path or None,
        userns=idmap.validate(sandbox.namespace_options) if sandbox.userns_path else None,
        cgroup_parent=sandbox.cgroup_parent,
        hostname=sandbox.hostname,
        hostname_path=sandbox.hostname_path,
        hosts_path=sandbox.hosts_path,
        resolv_conf_path=sandbox.resolv_conf_path,
        shm_path=sandbox.shm_path or "",
        log_directory=sandbox.log_directory,
    )

"""Recovery after a daemon restart (or kill -9): make the rows match what conmon and the
runtime know.

- CREATING rows are creates the old daemon never finished: undone completely (mount, dirs,
  row), so the name is free again.
- CREATED rows normally have no runtime state at all (conmon and `<runtime> create` run at
  start). A start the old daemon never finished left a runtime container that was created but
  not started: it is deleted and the container stays CREATED, as containerd does with such a
  task. One the runtime reports running was started just before the kill: RUNNING.
- CREATED / RUNNING rows: an exit file means the container exited while we were away; its code
  and finish time go to the row. A running container is left alone.
- EXITED rows whose runtime state or rootfs mount outlived the daemon (killed between seeing
  the exit and reaping it) are reaped.
- Runtime containers, bundles and storage dirs with no row at all (a create killed after its
  row was undone, or whose `runc create` finished only after the daemon died, or a remove
  killed between dropping the row and moving the dirs to the trash) are deleted.
- The trash (dirs of removed containers, see container_remove.py) is emptied in the background.
- A bundle that vanished (host reboot wipes the state dir) or a container whose conmon died
  without an exit file is EXITED with reason Unknown.
"""

from __future__ import annotations

import logging
import os
import time

from criruntime.container import attempt, rootfs
from criruntime.container.container_remove import teardown
from criruntime.container.container_start import attempted, discard_attempt
from criruntime.container.model import Container, ContainerState
from criruntime.container.service import TRASH, ContainerService
from criruntime.oci import runtime as oci

log = logging.getLogger("criruntime.container.restart")


def _bundle_lost(bundle: str) -> bool:
    return not os.path.isdir(bundle)


async def recover(svc: ContainerService) -> None:
    try:
        svc.empty_trash()  # before any verb runs, so only what an earlier daemon left
    except Exception:
        log.exception("emptying the trash failed")
    for container in svc.store.list():
        await _recover_one(svc, container)
    try:
        await _remove_orphans(svc)
    except Exception:
        log.exception("removing orphaned containers failed")


def _runtime_ids(root: str) -> list[str]:
    if not os.path.isdir(root):
        return []
    return [n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))]


def _remove_orphan_files(svc: ContainerService, known: set[str]) -> None:
    for parent in (svc.bundles_dir, svc.storage_root):
        for name in os.listdir(parent):
            if name not in known and name != TRASH:
                log.warning("removing orphaned container files %s", name[:12])
                rootfs.unmount(os.path.join(svc.bundle_dir(name), "rootfs"))
                rootfs.unmount_aux(svc.bundle_dir(name))
                rootfs.remove_dirs(os.path.join(parent, name))


async def _remove_orphans(svc: ContainerService) -> None:
    known = {c.id for c in svc.store.list()}
    for runtime in svc.runtimes.values():
        for name in _runtime_ids(runtime.root):
            if name not in known:
                log.warning("deleting orphaned %s container %s", runtime.handler, name[:12])
                await runtime.delete(name, force=True)
    _remove_orphan_files(svc, known)


async def _recover_one(svc: ContainerService, container: Container) -> None:
    try:
        if container.state is ContainerState.CREATING:
            log.warning("cleaning up half-created container %s", container.id[:12])
            await teardown(svc, container)
            svc.store.delete(container.id)
            return
        if container.state is ContainerState.CREATED:
            let_go = await _recover_created(svc, container)
            if let_go is None:
                return
            container = let_go
        if container.state not in (ContainerState.CREATED, ContainerState.RUNNING):
            await svc.reap_now(container)  # no-op unless the old daemon died before reaping
            return
        refreshed = svc.refresh(container)
        if refreshed.state is ContainerState.EXITED:
            log.info("container %s exited while the daemon was down", container.id[:12])
            return
        if _bundle_lost(container.bundle_dir) or not oci.conmon_alive(container.bundle_dir):
            state = await svc.runtime_for(container.runtime_handler).state(container.id)
            if state is not None and state.status == "running":
                log.warning("container %s runs without its monitor", container.id[:12])
                if container.state is ContainerState.CREATED:
                    svc.store.update(_running(container, state.pid))
                return
            svc.store.update(
                container.replace(
                    state=ContainerState.EXITED,
                    exit_code=255,
                    finished_at=time.time_ns(),
                    reason="Unknown",
                    message=(
                        "its bundle is gone (the node rebooted?), so it cannot run"
                        if _bundle_lost(container.bundle_dir)
                        else "container monitor lost while the daemon was down"
                    ),
                    pid=0,
                )
            )
            return
        if container.state is ContainerState.CREATED:
            # Killed between `runc start` and the row update: ask the runtime.
            state = await svc.runtime_for(container.runtime_handler).state(container.id)
            if state is not None and state.status == "running":
                svc.store.update(_running(container, state.pid))
    except Exception:
        log.exception("recovering container %s failed", container.id[:12])


def _running(container: Container, pid: int) -> Container:
    """A CREATED row whose start let its process go before the kill, as the start would have
    recorded it: the init's pid and the time the start took, not the recovery's."""
    return container.replace(
        state=ContainerState.RUNNING,
        pid=pid or _pidfile(container.bundle_dir),
        started_at=attempt.started_at(container.bundle_dir) or time.time_ns(),
    )


def _pidfile(bundle: str) -> int:
    try:
        with open(oci.BundlePaths(bundle).pidfile) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


async def _recover_created(svc: ContainerService, container: Container) -> Container | None:
    """A CREATED row. None when it is settled here (still CREATED: no process of it ever ran,
    whatever a cut-short start or undo left is undone); else the row with the pid and start
    time of the process its start let go, for the general RUNNING/exit-file logic."""
    bundle = container.bundle_dir
    if _bundle_lost(bundle):
        return container  # nothing left to start from: reported EXITED/Unknown below
    runtime = svc.runtime_for(container.runtime_handler)
    if attempt.discarding(bundle):
        log.warning("container %s: finishing the undo of a cut-short start", container.id[:12])
        await discard_attempt(runtime, container.id, bundle)
        return None
    state = await runtime.state(container.id) if runtime.has_state(container.id) else None
    if state is not None and state.status in ("created", "creating"):
        log.warning("container %s: discarding a start cut short by the restart", container.id[:12])
        await discard_attempt(runtime, container.id, bundle)
        return None
    exit_status = oci.read_exit_status(bundle)
    if state is not None or exit_status is not None:
        if (state is None or state.status != "running") and runtime.start_pending(container.id):
            # The init died before its process ran: its write to the exec fifo failed when
            # the daemon holding the other end was killed ("broken pipe", exit 1).
            log.warning("container %s: its start never ran the process", container.id[:12])
            await discard_attempt(runtime, container.id, bundle)
            return None
        # Started before the kill: running, or exited since.
        return container.replace(
            pid=(state.pid if state is not None else 0) or _pidfile(bundle),
            started_at=attempt.started_at(bundle) or container.started_at,
        )
    if attempted(bundle) and not oci.conmon_alive(bundle):
        runtime.reset_bundle(bundle)  # a start that failed before `runc create`
    return None

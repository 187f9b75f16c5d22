"""Recovery after a daemon restart: pods and their networking survive; leftovers are cleaned.

Pinned namespaces, /dev/shm mounts, the pod's init, cgroups and the CNI cache all live outside
the daemon, so a READY pod stays READY. A pod whose netns pin is gone (the host rebooted and
/run was emptied) or whose PID-namespace init died is marked NOTREADY, so kubelet recreates it.
A RunPodSandbox that died half-way (row still `creating`) is undone, with whatever it had made
but not yet recorded (pins, the PID namespace's init), and bundle dirs with no row are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil

from criruntime.sandbox import namespaces
from criruntime.sandbox.model import PodSandbox, SandboxState
from criruntime.sandbox.sandbox_remove import remove_locked
from criruntime.sandbox.service import SandboxService

log = logging.getLogger("criruntime.sandbox")


def _init_alive(sandbox: PodSandbox) -> bool:
    if not sandbox.pid_init_pid:
        return True
    try:
        return (
            os.stat(f"/proc/{sandbox.pid_init_pid}/ns/pid").st_ino
            == os.stat(sandbox.pid_ns_path or "").st_ino
        )
    except OSError:
        return False


async def recover(svc: SandboxService) -> None:
    known: set[str] = set()
    for sandbox in svc.store.list():
        known.add(sandbox.id)
        async with svc.locked(sandbox.id):
            if sandbox.creating:
                log.warning("pod %s: creation was interrupted; cleaning it up", sandbox.id[:12])
                try:
                    await remove_locked(svc, sandbox)
                    # Then what the row had not recorded yet (pins, the init), found on disk.
                    await asyncio.to_thread(_remove_orphan_dir, svc.bundle_dir(sandbox.id))
                except Exception:
                    log.exception(
                        "pod %s: cleanup of an interrupted creation failed", sandbox.id[:12]
                    )
                continue
            if sandbox.ready and (
                (sandbox.netns_path and not namespaces.is_pinned(sandbox.netns_path))
                or not _init_alive(sandbox)
            ):
                log.warning("pod %s: namespaces are gone; marking it NOTREADY", sandbox.id[:12])
                svc.store.update(sandbox.replace(state=SandboxState.NOTREADY))
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(svc.sandboxes_dir):
            if name not in known:
                path = os.path.join(svc.sandboxes_dir, name)
                log.warning("removing leftover sandbox dir %s", path)
                await asyncio.to_thread(_remove_orphan_dir, path)


def _remove_orphan_dir(path: str) -> None:
    """Undoes a pod known only by its bundle dir (named by its id): its init, pins and shm."""
    for pid in namespaces.owned_inits(os.path.basename(path)):
        namespaces.stop_init(pid)
    ns_dir = os.path.join(path, "ns")
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(ns_dir):
            namespaces.unpin(os.path.join(ns_dir, name))
    namespaces.unmount_shm(os.path.join(path, "shm"))
    shutil.rmtree(path, ignore_errors=True)

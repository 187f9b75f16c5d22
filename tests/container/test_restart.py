"""Recovery: a new ContainerService on the same db and state dirs, as after kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import time

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import container_list, container_remove, container_start, rootfs
from criruntime.container.model import Container, ContainerState
from criruntime.container.service import TRASH, ContainerService
from tests.container.conftest import Env, run


def restarted(env: Env) -> ContainerService:
    old = env.service
    old.runtime_set.close()  # what the kernel does for a killed daemon: its namespace fd goes
    env.service = ContainerService(env.config, env.db, pods=old.pods, images=old.images)
    return env.service


def test_exit_while_down_running_kept_and_half_created_cleaned(env: Env) -> None:
    running = env.run_container(env.container_config("run", command=["sleep", "1000"]))
    quick = env.run_container(
        env.container_config("quick", command=["sh", "-c", "sleep 0.5; exit 9"])
    )
    created = env.create(env.container_config("created", command=["true"]))
    # A create the old daemon never finished: a CREATING row with a bundle dir.
    half = "h" * 64
    os.makedirs(env.service.bundle_dir(half))
    env.service.store.add(
        Container(
            id=half, pod_id=env.pod.id, name_key="half_pod_ns_uid-1_0",
            state=ContainerState.CREATING, created_at=time.time_ns(),
            config=env.container_config("half"), image_id="sha256:x", runtime_handler="runc",
            bundle_dir=env.service.bundle_dir(half), storage_dir=env.service.storage_dir(half),
        )
    )  # fmt: skip
    pid_before = env.service.get(running).pid
    time.sleep(1.0)  # "daemon down": quick exits meanwhile
    service = restarted(env)
    listed = run(container_list.list_containers(service, api.ListContainersRequest()))
    states = {c.metadata.name: c.state for c in listed.containers}
    assert states == {
        "run": api.ContainerState.CONTAINER_RUNNING,
        "quick": api.ContainerState.CONTAINER_EXITED,
        "created": api.ContainerState.CONTAINER_CREATED,
    }
    assert service.get(quick).exit_code == 9
    assert service.get(running).pid == pid_before
    os.kill(pid_before, 0)  # still alive
    assert not os.path.exists(service.bundle_dir(half))
    # The half-created container's name is free again.
    env.create(env.container_config("half", command=["true"]))
    assert service.get(created).state is ContainerState.CREATED


def test_node_reboot_leaves_everything_exited_and_removable(env: Env) -> None:
    """What a reboot leaves: the db (under /var/lib) but no processes, mounts or state dir
    (/run). Containers are EXITED 255 / Unknown saying why, and go away cleanly."""
    running = env.run_container(env.container_config("run", command=["sleep", "1000"]))
    created = env.create(env.container_config("created", command=["true"]))
    bundle = env.service.bundle_dir(running)
    with open(os.path.join(bundle, "conmon.pid")) as f:
        conmon = int(f.read())
    init = env.service.get(running).pid
    for pid in (conmon, init):
        os.kill(pid, signal.SIGKILL)
    for cid in (running, created):
        rootfs.unmount(os.path.join(env.service.bundle_dir(cid), "rootfs"))
    shutil.rmtree(env.service.bundles_dir)
    os.makedirs(env.service.bundles_dir)
    service = restarted(env)
    run(service.ensure_recovered())
    for cid, why in ((running, "conmon"), (created, "bundle is gone")):
        c = service.get(cid)
        assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 255, "Unknown"), c
        assert why in c.message and "rebooted" in c.message, c.message
    for cid in (running, created):
        run(container_remove.remove_container(
            service, api.RemoveContainerRequest(container_id=cid)))  # fmt: skip
    assert service.store.list() == []


def test_created_never_started_survives_restart_and_starts(env: Env) -> None:
    # No runtime state and no conmon exist for a created container; recovery keeps it CREATED.
    cid = env.create(env.container_config("c", command=["sh", "-c", "echo late; exit 4"]))
    service = restarted(env)
    run(service.ensure_recovered())
    assert service.get(cid).state is ContainerState.CREATED
    run(container_start.start_container(service, api.StartContainerRequest(container_id=cid)))
    env.wait_exited(cid)
    assert service.get(cid).exit_code == 4
    with open(env.log_file()) as f:
        assert "late" in f.read()


def test_start_cut_short_by_restart_is_discarded(env: Env) -> None:
    # The old daemon died after `runc create` but before `runc start`: the runtime container
    # is deleted and the container stays CREATED, as containerd does with such a task.
    cid = env.create(env.container_config("c", command=["sleep", "1000"]))
    container = env.service.store.get(cid)
    runtime = env.service.runtime_for(container.runtime_handler)
    run(runtime.create(cid, container.bundle_dir, env.log_file()))
    assert runtime.has_state(cid)
    service = restarted(env)
    run(service.ensure_recovered())
    assert service.get(cid).state is ContainerState.CREATED
    assert not runtime.has_state(cid)
    assert sorted(os.listdir(container.bundle_dir)) == ["config.json", "rootfs"]
    run(container_start.start_container(service, api.StartContainerRequest(container_id=cid)))
    assert service.get(cid).state is ContainerState.RUNNING


def test_recovery_empties_the_trash_and_removes_rowless_dirs(env: Env) -> None:
    # Three removes cut short by a kill: one after the renames into the trash (its deletion
    # never ran), one between dropping the row and the renames (dirs without a row), and an
    # old trash entry with a deep tree.
    trashed = env.run_container(env.container_config("t", command=["sleep", "1000"]))
    rowless = env.run_container(env.container_config("r", command=["sleep", "1000"]))
    kept = env.create(env.container_config("k", command=["true"]))
    svc = env.service
    svc._delete_soon = lambda paths: None  # type: ignore[method-assign]
    run(container_remove.remove(svc, trashed))
    svc.discard_dirs = lambda container: None  # type: ignore[method-assign]
    run(container_remove.remove(svc, rowless))
    deep = os.path.join(svc.trash_dirs[1], "x" * 64 + ".0000")
    os.makedirs(os.path.join(deep, "upper", "a", "b"))
    os.chmod(os.path.join(deep, "upper", "a"), 0)
    assert all(os.listdir(trash) for trash in svc.trash_dirs)
    assert os.path.exists(svc.bundle_dir(rowless)) and os.path.exists(svc.storage_dir(rowless))

    service = restarted(env)
    run(service.ensure_recovered())
    run(service.settle())
    for trash in service.trash_dirs:
        assert os.listdir(trash) == []
    for parent in (service.bundles_dir, service.storage_root):
        assert sorted(os.listdir(parent)) == sorted([TRASH, kept])
    assert [c.id for c in service.store.list()] == [kept]

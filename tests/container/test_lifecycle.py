"""Container verbs end to end on runc + conmon, with a busybox layer built by the test."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import (
    container_execsync,
    container_list,
    container_log_reopen,
    container_remove,
    container_start,
    container_status,
    container_stop,
    container_update,
)
from criruntime.container import service as container_service
from criruntime.container.model import ContainerState
from criruntime.container.service import TRASH
from criruntime.errors import (
    AlreadyExists,
    CriError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from tests.container.conftest import Env, run


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def status(env: Env, cid: str, verbose: bool = False) -> api.ContainerStatusResponse:
    request = api.ContainerStatusRequest(container_id=cid, verbose=verbose)
    return run(container_status.container_status(env.service, request))


def stop(env: Env, cid: str, timeout: int) -> None:
    request = api.StopContainerRequest(container_id=cid, timeout=timeout)
    run(container_stop.stop_container(env.service, request))


def remove(env: Env, cid: str) -> None:
    run(
        container_remove.remove_container(env.service, api.RemoveContainerRequest(container_id=cid))
    )


def exec_sync(env: Env, cid: str, cmd: list[str], timeout: int = 0) -> api.ExecSyncResponse:
    request = api.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout)
    return run(container_execsync.exec_sync(env.service, request))


def test_run_logs_and_exit_code(env: Env) -> None:
    cid = env.run_container(
        env.container_config(command=sh("echo out; echo err >&2; printf part; exit 3"))
    )
    env.wait_exited(cid)
    st = status(env, cid).status
    assert st.state == api.ContainerState.CONTAINER_EXITED
    assert st.exit_code == 3 and st.reason == "Error"
    assert st.created_at <= st.started_at <= st.finished_at
    lines = Path(env.log_file()).read_text().splitlines()
    streams = [
        (line.split(" ", 3)[1], line.split(" ", 3)[2], line.split(" ", 3)[3]) for line in lines
    ]
    assert ("stdout", "F", "out") in streams
    assert ("stderr", "F", "err") in streams
    assert ("stdout", "P", "part") in streams
    assert st.log_path == env.log_file()


def test_completed_reason_and_image_fields(env: Env) -> None:
    cid = env.run_container(env.container_config(command=["true"]))
    env.wait_exited(cid)
    st = status(env, cid).status
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert st.image.image == "docker.io/library/busybox:latest"
    assert st.image.user_specified_image == "busybox"
    assert st.image_ref.startswith("docker.io/library/busybox@sha256:")
    assert st.image_id == "sha256:" + "b" * 64


def test_stop_signal_then_kill_after_timeout(env: Env) -> None:
    # A process that ignores SIGTERM is SIGKILLed once the timeout passes: exit 137.
    cid = env.run_container(
        env.container_config(command=sh("trap '' TERM; while :; do sleep 0.1; done"))
    )
    started = time.monotonic()
    stop(env, cid, timeout=1)
    assert time.monotonic() - started >= 0.9
    st = status(env, cid).status
    assert st.state == api.ContainerState.CONTAINER_EXITED and st.exit_code == 137
    stop(env, cid, timeout=1)  # idempotent


def test_stop_uses_the_stop_signal(env: Env) -> None:
    config = env.container_config(
        command=sh("trap 'exit 42' USR1; while :; do sleep 0.1; done"),
        stop_signal=api.Signal.SIGUSR1,
    )
    cid = env.run_container(config)
    time.sleep(0.3)
    stop(env, cid, timeout=10)
    assert status(env, cid).status.exit_code == 42


def test_image_stop_signal(env: Env) -> None:
    image = env.images["busybox"]
    env.images["busybox"] = type(image)(
        id=image.id, config=type(image.config)(env=image.config.env, stop_signal="SIGUSR2"),
        layer_dirs=image.layer_dirs, repo_tags=image.repo_tags, repo_digests=image.repo_digests,
    )  # fmt: skip
    cid = env.run_container(
        env.container_config(command=sh("trap 'exit 7' USR2; while :; do sleep 0.1; done"))
    )
    time.sleep(0.3)
    stop(env, cid, timeout=10)
    assert status(env, cid).status.exit_code == 7


def test_remove_running_container_and_idempotence(env: Env) -> None:
    cid = env.run_container(env.container_config(command=["sleep", "1000"]))
    bundle = env.service.store.get(cid).bundle_dir
    remove(env, cid)
    assert not os.path.exists(bundle)
    with pytest.raises(NotFound):
        status(env, cid)
    remove(env, cid)
    stop(env, cid, timeout=0)
    assert os.path.exists(env.log_file())  # the log stays for kubelet


def test_exec_sync_output_exit_code_and_env(env: Env) -> None:
    cid = env.run_container(
        env.container_config(command=["sleep", "1000"], envs=[api.KeyValue(key="X", value="y")])
    )
    result = exec_sync(env, cid, sh("echo $X $FROM_IMAGE; echo e >&2; exit 5"))
    assert (result.stdout, result.stderr, result.exit_code) == (b"y 1\n", b"e\n", 5)


def test_exec_sync_timeout_kills(env: Env) -> None:
    cid = env.run_container(env.container_config(command=["sleep", "1000"]))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        exec_sync(env, cid, ["sleep", "100"], timeout=1)
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    procs = exec_sync(env, cid, sh("for p in /proc/[0-9]*; do cat $p/cmdline; echo; done")).stdout
    assert b"sleep\x00100\x00\n" not in procs  # the timed-out process is gone
    assert b"sleep\x001000" in procs


def test_exec_sync_output_cap(env: Env) -> None:
    env.service.exec_output_limit = 1000
    cid = env.run_container(env.container_config(command=["sleep", "1000"]))
    result = exec_sync(env, cid, sh("yes | head -c 100000; echo done >&2"))
    assert len(result.stdout) == 1000 and result.stderr == b"done\n" and result.exit_code == 0


def test_exec_output_fits_one_message() -> None:
    fit = container_execsync.fit_output
    assert fit(b"o" * 4, b"e" * 4, 10) == (b"o" * 4, b"e" * 4)  # fits: untouched
    assert fit(b"o" * 20, b"e" * 20, 10) == (b"o" * 5, b"e" * 5)  # both big: half each
    assert fit(b"o" * 2, b"e" * 20, 10) == (b"o" * 2, b"e" * 8)  # stderr takes what is left
    assert fit(b"o" * 20, b"e" * 2, 10) == (b"o" * 8, b"e" * 2)


def test_exec_requires_running(env: Env) -> None:
    cid = env.create(env.container_config(command=["sleep", "1000"]))
    with pytest.raises(FailedPrecondition):
        exec_sync(env, cid, ["true"])


def test_status_fields_and_verbose(env: Env) -> None:
    mount_src = os.path.join(env.base, "data")
    os.makedirs(mount_src)
    config = env.container_config(
        command=["sleep", "1000"],
        labels={"a": "b"},
        annotations={"k": "v"},
        mounts=[api.Mount(container_path="/data", host_path=mount_src, readonly=True)],
        linux=api.LinuxContainerConfig(
            security_context=api.LinuxContainerSecurityContext(
                run_as_username="app", supplemental_groups=[4000]
            ),
            resources=api.LinuxContainerResources(memory_limit_in_bytes=64 << 20),
        ),
    )
    cid = env.run_container(config)
    response = status(env, cid, verbose=True)
    st = response.status
    assert st.state == api.ContainerState.CONTAINER_RUNNING
    assert st.labels["a"] == "b" and st.annotations["k"] == "v"
    assert st.mounts[0].container_path == "/data" and st.mounts[0].readonly
    assert st.resources.linux.memory_limit_in_bytes == 64 << 20
    assert st.user.linux.uid == 1000 and st.user.linux.gid == 1000
    assert list(st.user.linux.supplemental_groups) == [1000, 2000, 4000]
    info = json.loads(response.info["info"])
    assert info["pid"] > 0 and info["runtimeSpec"]["process"]["user"]["uid"] == 1000
    out = exec_sync(env, cid, sh("id -u; id -G; touch /data/x 2>&1 || echo ro")).stdout.decode()
    assert out.splitlines()[0] == "1000" and "2000" in out.splitlines()[1] and "ro" in out


def test_supplemental_groups_policy_strict_ignores_image_groups(env: Env) -> None:
    # "app" is a member of group 2000 in the image's /etc/group; Strict must not add it.
    security = api.LinuxContainerSecurityContext(
        run_as_username="app",
        supplemental_groups=[4000],
        supplemental_groups_policy=api.SupplementalGroupsPolicy.Strict,
    )
    config = env.container_config(
        command=["sleep", "1000"], linux=api.LinuxContainerConfig(security_context=security)
    )
    cid = env.run_container(config)
    assert list(status(env, cid).status.user.linux.supplemental_groups) == [1000, 4000]
    assert exec_sync(env, cid, sh("id -G")).stdout.decode().split() == ["1000", "4000"]


def test_list_filters(env: Env) -> None:
    a = env.run_container(env.container_config("a", command=["sleep", "1000"], labels={"app": "x"}))
    b = env.create(env.container_config("b", command=["true"], labels={"app": "y"}))

    def ids(f: api.ContainerFilter) -> set[str]:
        request = api.ListContainersRequest(filter=f)
        response = run(container_list.list_containers(env.service, request))
        return {c.id for c in response.containers}

    assert ids(api.ContainerFilter()) == {a, b}
    assert ids(api.ContainerFilter(id=a[:8])) == {a}
    running = api.ContainerStateValue(state=api.ContainerState.CONTAINER_RUNNING)
    assert ids(api.ContainerFilter(state=running)) == {a}
    assert ids(api.ContainerFilter(label_selector={"app": "y"})) == {b}
    assert ids(api.ContainerFilter(pod_sandbox_id=env.pod.id)) == {a, b}
    assert ids(api.ContainerFilter(pod_sandbox_id="nope")) == set()


def test_bad_input(env: Env) -> None:
    env.create(env.container_config("dup", command=["true"]))
    with pytest.raises(AlreadyExists):
        env.create(env.container_config("dup", command=["true"]))
    with pytest.raises(NotFound):
        env.create(env.container_config("x", image=api.ImageSpec(image="missing")))
    busybox = env.images["busybox"]
    env.images["nocmd"] = type(busybox)(
        id="sha256:" + "c" * 64, config=type(busybox.config)(), layer_dirs=busybox.layer_dirs
    )
    with pytest.raises(InvalidArgument, match="no command"):
        env.create(env.container_config("y", image=api.ImageSpec(image="nocmd")))
    with pytest.raises(InvalidArgument):
        env.create(
            env.container_config(
                "z", command=["true"], mounts=[api.Mount(container_path="/d", host_path="rel")]
            )
        )
    group_only = api.LinuxContainerConfig(
        security_context=api.LinuxContainerSecurityContext(run_as_group=api.Int64Value(value=5))
    )
    with pytest.raises(InvalidArgument, match="run_as_group"):
        env.create(env.container_config("g", command=["true"], linux=group_only))
    # Nothing leaked by the failures: only "dup" remains, and its name is still taken.
    assert [c.name for c in env.service.store.list()] == ["dup"]
    assert [n for n in os.listdir(env.service.bundles_dir) if n != TRASH] == [
        env.service.store.list()[0].id
    ]


def test_unknown_runtime_handler(env: Env) -> None:
    env.pod = type(env.pod)(**{**env.pod.__dict__, "runtime_handler": "nope"})
    with pytest.raises(InvalidArgument, match="unknown runtime handler"):
        env.create(env.container_config(command=["true"]))


def test_host_cgroup_rule_applies_per_runtime_handler(env: Env) -> None:
    """crun in its mount namespace sees fewer v1 controllers than the host (no hugetlb, which
    lives on the hidden hierarchy here): the host cgroup rule is asked with those, so hugepage
    limits are dropped with a warning on either handler instead of failing the start."""
    runtime = env.service.runtime_for(env.pod.runtime_handler)
    rule = env.service.host_cgroups_for(runtime)
    if runtime.cgroup_controllers is None:
        assert rule is env.service.host_cgroups
    else:
        assert rule.controllers == env.service.host_cgroups.controllers & runtime.cgroup_controllers
    assert "hugetlb" not in rule.controllers and "memory" in rule.controllers
    huge = api.LinuxContainerResources(
        hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=2 << 20)]
    )
    cid = env.run_container(env.container_config(
        command=["sleep", "100"], linux=api.LinuxContainerConfig(resources=huge)))  # fmt: skip
    container = env.service.get(cid)
    assert container.state is ContainerState.RUNNING
    assert any("hugepage limits dropped" in w for w in container.warnings), container.warnings


def test_update_resources(env: Env) -> None:
    cid = env.run_container(env.container_config(command=["sleep", "1000"]))
    new = api.LinuxContainerResources(memory_limit_in_bytes=128 << 20, cpu_shares=512)
    request = api.UpdateContainerResourcesRequest(container_id=cid, linux=new)
    run(container_update.update_container_resources(env.service, request))
    assert status(env, cid).status.resources.linux.memory_limit_in_bytes == 128 << 20
    cgroup = os.path.join("/sys/fs/cgroup/memory/criruntime-test", cid, "memory.limit_in_bytes")
    assert int(Path(cgroup).read_text()) == 128 << 20


def test_reopen_log(env: Env) -> None:
    cid = env.run_container(
        env.container_config(command=sh("while :; do echo tick; sleep 0.1; done"))
    )
    time.sleep(0.3)
    os.rename(env.log_file(), env.log_file() + ".1")
    request = api.ReopenContainerLogRequest(container_id=cid)
    run(container_log_reopen.reopen_container_log(env.service, request))
    time.sleep(0.3)
    assert "tick" in Path(env.log_file()).read_text()


def test_oom_killed(env: Env) -> None:
    resources = api.LinuxContainerResources(memory_limit_in_bytes=16 << 20)
    config = env.container_config(
        command=sh("x=a; while :; do x=$x$x; done"),
        linux=api.LinuxContainerConfig(resources=resources),
    )
    cid = env.run_container(config)
    env.wait_exited(cid, timeout=30)
    st = status(env, cid).status
    assert (st.exit_code, st.reason) == (137, "OOMKilled")


def test_readonly_rootfs_and_caps(env: Env) -> None:
    security = api.LinuxContainerSecurityContext(
        readonly_rootfs=True,
        capabilities=api.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_RAW"]),
        no_new_privs=True,
    )
    cid = env.run_container(
        env.container_config(
            command=["sleep", "1000"], linux=api.LinuxContainerConfig(security_context=security)
        )
    )
    out = exec_sync(
        env,
        cid,
        sh("touch /x 2>&1; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status"),
    )
    text = out.stdout.decode()
    assert "Read-only file system" in text
    assert "0000000000002000" in text  # CAP_NET_RAW is bit 13
    assert "NoNewPrivs:\t1" in text


def test_runtime_default_seccomp_denies_mount(env: Env) -> None:
    security = api.LinuxContainerSecurityContext(
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.ProfileType.RuntimeDefault),
        capabilities=api.Capability(add_capabilities=["SYS_ADMIN"]),
    )
    cid = env.run_container(
        env.container_config(
            command=["sleep", "1000"], linux=api.LinuxContainerConfig(security_context=security)
        )
    )
    # SYS_ADMIN re-allows mount; keyctl stays denied. Seccomp mode 2 is on.
    out = exec_sync(env, cid, sh("grep Seccomp: /proc/self/status")).stdout.decode()
    assert "2" in out
    state = ContainerState.RUNNING
    assert env.service.get(cid).state is state


def test_created_container_runs_nothing_until_start(env: Env) -> None:
    cid = env.create(env.container_config(command=sh("echo hi; exec sleep 1000")))
    container = env.service.store.get(cid)
    runtime = env.service.runtime_for(container.runtime_handler)
    assert container.state is ContainerState.CREATED and container.pid == 0
    assert not runtime.has_state(cid) and not os.path.exists(env.log_file())
    st = status(env, cid).status
    assert st.started_at == 0 and json.loads(status(env, cid, True).info["info"])["pid"] == 0
    with pytest.raises(FailedPrecondition):
        run(
            container_log_reopen.reopen_container_log(
                env.service, api.ReopenContainerLogRequest(container_id=cid)
            )
        )
    run(container_start.start_container(env.service, api.StartContainerRequest(container_id=cid)))
    assert runtime.has_state(cid) and os.path.exists(env.log_file())
    assert status(env, cid).status.started_at > 0


def test_update_on_created_applies_at_start(env: Env) -> None:
    cid = env.create(env.container_config(command=["sleep", "1000"]))
    new = api.LinuxContainerResources(memory_limit_in_bytes=96 << 20, cpu_shares=256)
    request = api.UpdateContainerResourcesRequest(container_id=cid, linux=new)
    run(container_update.update_container_resources(env.service, request))
    assert status(env, cid).status.resources.linux.memory_limit_in_bytes == 96 << 20
    run(container_start.start_container(env.service, api.StartContainerRequest(container_id=cid)))
    cgroup = os.path.join("/sys/fs/cgroup/memory/criruntime-test", cid, "memory.limit_in_bytes")
    assert int(Path(cgroup).read_text()) == 96 << 20


def test_start_failure_is_start_error(env: Env) -> None:
    cid = env.create(env.container_config(command=["/no/such/binary"]))
    with pytest.raises(CriError, match="/no/such/binary"):
        run(
            container_start.start_container(
                env.service, api.StartContainerRequest(container_id=cid)
            )
        )
    st = status(env, cid).status
    assert st.state == api.ContainerState.CONTAINER_EXITED
    assert (st.exit_code, st.reason, st.started_at) == (128, "StartError", 0)
    assert "/no/such/binary" in st.message
    assert not env.service.runtime_for("").has_state(cid)
    with pytest.raises(FailedPrecondition):
        run(
            container_start.start_container(
                env.service, api.StartContainerRequest(container_id=cid)
            )
        )
    bundle = env.service.store.get(cid).bundle_dir
    remove(env, cid)
    assert not os.path.exists(bundle)


def test_stop_reaps_so_remove_only_drops_files(env: Env) -> None:
    cid = env.run_container(env.container_config(command=["sleep", "1000"]))
    container = env.service.store.get(cid)
    runtime = env.service.runtime_for(container.runtime_handler)
    stop(env, cid, timeout=0)
    assert not runtime.has_state(cid)
    assert not os.path.ismount(os.path.join(container.bundle_dir, "rootfs"))
    remove(env, cid)
    assert not os.path.exists(container.bundle_dir)
    assert not os.path.exists(container.storage_dir)


def test_remove_moves_dirs_to_trash_and_deletes_them_in_the_background(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = env.run_container(env.container_config(command=["sleep", "1000"]))
    container = env.service.store.get(cid)
    svc = env.service
    gate = threading.Event()
    delete_trees = container_service._delete_trees

    def held(paths: list[str]) -> None:
        assert gate.wait(10)
        delete_trees(paths)

    monkeypatch.setattr(container_service, "_delete_trees", held)

    def moved_to_trash() -> None:
        # Remove has returned while the deletion is held: the container is gone from the store
        # and its dirs from their places, which now sit in the trash of their own filesystem.
        assert cid not in {c.id for c in svc.store.list()}
        assert not os.path.exists(container.bundle_dir)
        assert not os.path.exists(container.storage_dir)
        for trash in svc.trash_dirs:
            assert [n.split(".")[0] for n in os.listdir(trash)] == [cid]

    async def main() -> None:
        await container_remove.remove(svc, cid)
        moved_to_trash()
        settling = asyncio.ensure_future(svc.settle())
        await asyncio.sleep(0.05)
        assert not settling.done()  # shutdown waits for the pending deletion
        gate.set()
        await asyncio.wait_for(settling, 10)

    asyncio.run(main())
    for trash in svc.trash_dirs:
        assert os.listdir(trash) == []
    assert sorted(os.listdir(svc.bundles_dir)) == sorted(os.listdir(svc.storage_root)) == [TRASH]
    assert cid not in Path("/proc/self/mountinfo").read_text()

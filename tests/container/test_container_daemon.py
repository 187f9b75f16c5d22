"""Containers end to end through the real daemon: images pulled from a docker-registry on
127.0.0.1, host-network pods, crun and runc under conmon (each test runs on both). Most tests
share one daemon (one pull); the kill -9 and image-removal tests get their own. Every test
removes what it made via RPC, and a last-resort cleanup kills leftovers by the PIDs conmon
recorded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.container.daemon_env import (
    Cluster,
    ImageSet,
    cgroup_procs,
    container_config,
    force_cleanup,
    host_pod_config,
    module_daemon,
    mounts_under,
    pid_alive,
    pull,
    read_log,
    sh,
    wait_for,
)
from tests.image import images

CREATED = api.ContainerState.CONTAINER_CREATED
RUNNING = api.ContainerState.CONTAINER_RUNNING
EXITED = api.ContainerState.CONTAINER_EXITED
SLEEP = sh("exec sleep 1000")


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details() or ""


@pytest.fixture(scope="module")
def shared(imgs: ImageSet) -> Iterator[Daemon]:
    """One daemon for the module, with the busybox and no-command images pulled."""
    with module_daemon(imgs.busybox_ref, imgs.nocmd_ref) as d:
        yield d


@pytest.fixture
def cl(shared: Daemon, handler: str) -> Iterator[Cluster]:
    cluster = Cluster(shared, handler)
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def own(make_daemon: Callable[..., Daemon], imgs: ImageSet, handler: str) -> Iterator[Cluster]:
    """A daemon of the test's own, busybox pulled."""
    d = make_daemon()
    cluster = Cluster(d, handler)
    try:
        pull(d, imgs.busybox_ref)
        yield cluster
    finally:
        cluster.cleanup()
        force_cleanup(d)


# ---- lifecycle, status, logs -------------------------------------------------------------------


def test_run_status_and_cri_logs(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    script = "echo out; echo err >&2; printf part; sleep 0.3; echo ial; exec sleep 1000"
    cfg = container_config(imgs.busybox_ref, labels={"app": "x"}, annotations={"n": "1"},
                           **sh(script))  # fmt: skip
    cid = cl.create(pod, cfg)
    st = cl.status(cid).status
    assert st.state == CREATED and st.created_at > 0 and st.started_at == 0
    cl.start(cid)
    st = cl.status(cid).status
    assert st.state == RUNNING
    assert st.started_at >= st.created_at and st.finished_at == 0
    assert st.exit_code == 0 and st.reason == "" and st.message == ""
    assert st.metadata.name == "c" and st.labels == {"app": "x"} and st.annotations == {"n": "1"}
    assert st.image.image == imgs.busybox_ref
    assert st.image_ref == imgs.busybox_repo_digest
    assert st.image_id == imgs.busybox.config_digest
    assert st.log_path == cl.log_file(pod)
    info = cl.info(cid)
    assert info["sandboxID"] == pod and info["runtimeSpec"]["process"]["args"][0] == "sh"
    assert pid_alive(info["pid"])
    listed = cl.rt.ListContainers(
        api.ListContainersRequest(filter=api.ContainerFilter(id=cid))
    ).containers
    # Listed by image ID, which kubelet's image GC matches against ListImages.
    assert [c.image_ref for c in listed] == [imgs.busybox.config_digest]
    assert listed[0].pod_sandbox_id == pod and listed[0].image_id == imgs.busybox.config_digest

    path = cl.log_file(pod)
    wait_for(lambda: ("stdout", "F", "ial") in read_log(path), what="log line")
    lines = read_log(path)
    assert ("stdout", "F", "out") in lines and ("stderr", "F", "err") in lines
    assert lines.index(("stdout", "P", "part")) < lines.index(("stdout", "F", "ial"))


def test_exec_sync(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    cid = cl.run(pod, container_config(imgs.busybox_ref, envs=[api.KeyValue(key="A", value="1")],
                                       **SLEEP))  # fmt: skip
    r = cl.exec(cid, "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code) == (b"hi\n", b"oops\n", 3)
    assert cl.exec(cid, "cat", "/etc/marker").stdout == b"busybox\n"
    env = cl.exec(cid, "env").stdout.decode().split("\n")
    assert "A=1" in env and "FROM_IMAGE=1" in env
    big = cl.exec(cid, "sh", "-c", "seq 1 200000")
    assert big.exit_code == 0 and big.stdout.endswith(b"\n200000\n")

    pid = cl.info(cid)["pid"]
    started = time.monotonic()
    code, details = code_of(lambda: cl.exec(cid, "sleep", "77", timeout=1))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
    assert time.monotonic() - started < 10
    # The exec'd process is gone: only the container's init is left in its cgroup.
    wait_for(lambda: cgroup_procs(pid) == [pid], timeout=5, what="exec'd process killed")
    assert cl.exec(cid, "true").exit_code == 0  # the container still works

    code, _ = code_of(lambda: cl.exec(cid))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    # 20 MB on each stream: each is under the 16 MiB cap alone, not together; the reply is
    # trimmed to one gRPC message kubelet accepts instead of failing to be sent.
    r = cl.exec(cid, "sh", "-c", "head -c 20000000 /dev/zero; head -c 20000000 /dev/zero >&2")
    assert r.exit_code == 0
    assert len(r.stdout) == len(r.stderr) and r.stdout.strip(b"\0") == b""
    assert 16 * 1024 * 1024 - 4096 < len(r.stdout) + len(r.stderr) < 16 * 1024 * 1024


def test_volumes_are_seen_as_the_host_sees_them_now(cl: Cluster, imgs: ImageSet) -> None:
    """A volume on a mount made after the daemon started (kubelet's tmpfs for a secret) shows
    its content on both handlers, crun's private mount namespace included; with
    HostToContainer, a mount made later below a shared host path reaches the running
    container. Removing the container leaves the host path and its content alone."""
    source = tempfile.mkdtemp(prefix="crir-vol-")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", source], check=True)
    try:
        subprocess.run(["mount", "--make-shared", source], check=True)
        with open(os.path.join(source, "secret"), "w") as f:
            f.write("s3cret")
        pod = cl.run_pod()
        mounts = [
            api.Mount(container_path="/vol", host_path=source,
                      propagation=api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER),
            api.Mount(container_path="/file", host_path=os.path.join(source, "secret"),
                      readonly=True),
        ]  # fmt: skip
        cid = cl.run(pod, container_config(imgs.busybox_ref, mounts=mounts, **SLEEP))
        assert cl.exec(cid, "cat", "/vol/secret").stdout == b"s3cret"
        assert cl.exec(cid, "cat", "/file").stdout == b"s3cret"
        late = os.path.join(source, "late")
        os.mkdir(late)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", late], check=True)
        with open(os.path.join(late, "x"), "w") as f:
            f.write("late")
        wait_for(lambda: cl.exec(cid, "cat", "/vol/late/x").stdout == b"late",
                 what="a later host mount seen in the container")  # fmt: skip
        cl.remove(cid)
        with open(os.path.join(source, "secret")) as f:
            assert f.read() == "s3cret"
        assert mounts_under(os.path.join(cl.daemon.state, "containers")) == []
    finally:
        subprocess.run(["umount", "-R", source], check=False)
        os.rmdir(source)


def test_bidirectional_mounts_reach_the_host(cl: Cluster, imgs: ImageSet) -> None:
    """A mount a privileged container makes under a Bidirectional volume shows on the host
    path, as with runc: crun's private namespace passes it back through the staged bind."""
    source = tempfile.mkdtemp(prefix="crir-bidi-")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", source], check=True)
    try:
        subprocess.run(["mount", "--make-shared", source], check=True)
        os.mkdir(os.path.join(source, "inner"))
        privileged = api.LinuxSandboxSecurityContext(privileged=True)
        pod = cl.run_pod(host_pod_config(
            cl.daemon, linux=api.LinuxPodSandboxConfig(security_context=privileged)))  # fmt: skip
        bidirectional = api.MountPropagation.PROPAGATION_BIDIRECTIONAL
        mounts = [api.Mount(container_path="/vol", host_path=source, propagation=bidirectional)]
        security = api.LinuxContainerSecurityContext(privileged=True)
        cid = cl.run(pod, container_config(
            imgs.busybox_ref, mounts=mounts,
            linux=api.LinuxContainerConfig(security_context=security), **SLEEP))  # fmt: skip
        r = cl.exec(
            cid, "sh", "-c", "busybox mount -t tmpfs tmpfs /vol/inner && echo x > /vol/inner/f"
        )
        assert r.exit_code == 0, r.stderr
        inner = os.path.join(source, "inner")
        wait_for(lambda: os.path.exists(os.path.join(inner, "f")), what="the mount on the host")
        assert inner in mounts_under(source)
        cl.remove(cid)
    finally:
        subprocess.run(["umount", "-R", source], check=False)
        os.rmdir(source)


def test_stop_exit_codes_and_remove(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    ref = imgs.busybox_ref
    ok = cl.run(pod, container_config(ref, name="ok", **sh("exit 0")))
    bad = cl.run(pod, container_config(ref, name="bad", **sh("exit 3")))
    stubborn = cl.run(pod, container_config(
        ref, name="stubborn", **sh("trap '' TERM; while :; do sleep 0.05; done")))  # fmt: skip
    polite = cl.run(pod, container_config(
        ref, name="polite", **sh("trap 'exit 0' TERM; while :; do sleep 0.05; done")))  # fmt: skip

    st = cl.wait_state(ok, EXITED)
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert st.finished_at >= st.started_at > 0
    st = cl.wait_state(bad, EXITED)
    assert (st.exit_code, st.reason) == (3, "Error")

    started = time.monotonic()
    cl.stop(polite, timeout=10)
    assert time.monotonic() - started < 5
    st = cl.status(polite).status
    assert (st.state, st.exit_code, st.reason) == (EXITED, 0, "Completed")

    pid = cl.info(stubborn)["pid"]
    started = time.monotonic()
    cl.stop(stubborn, timeout=1)
    assert 1.0 <= time.monotonic() - started < 10
    st = cl.status(stubborn).status
    assert (st.state, st.exit_code, st.reason) == (EXITED, 137, "Error")
    assert not pid_alive(pid)
    started = time.monotonic()
    cl.stop(stubborn, timeout=1)  # idempotent, and no second grace period
    assert time.monotonic() - started < 1.0
    code, _ = code_of(lambda: cl.exec(stubborn, "true"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    # Remove: idempotent; a running container is killed first; nothing stays on disk.
    running = cl.run(pod, container_config(ref, name="running", **SLEEP))
    running_pid = cl.info(running)["pid"]
    bundles = os.path.join(cl.daemon.state, "containers")
    for cid in (stubborn, running):
        cl.remove(cid)
        cl.remove(cid)
        code, _ = code_of(lambda cid=cid: cl.status(cid))  # type: ignore[misc]
        assert code == grpc.StatusCode.NOT_FOUND
        assert cid not in os.listdir(bundles)
        assert not [m for m in mounts_under(cl.daemon.base) if cid in m]
        cl.stop(cid)  # stopping a removed container is fine too
    assert not pid_alive(running_pid)
    cl.remove("f" * 64)  # never existed: success
    assert os.path.exists(cl.log_file(pod, "running"))  # logs stay for kubelet


def test_list_filters(cl: Cluster, imgs: ImageSet) -> None:
    ref = imgs.busybox_ref
    p1, p2 = cl.run_pod(), cl.run_pod()
    a = cl.run(p1, container_config(ref, name="a", labels={"app": "a", "tier": "web"}, **SLEEP))
    b = cl.create(p1, container_config(ref, name="b", labels={"app": "b", "tier": "web"}, **SLEEP))
    c = cl.run(p2, container_config(ref, name="c", labels={"app": "c"}, **sh("exit 0")))
    cl.wait_state(c, EXITED)
    mine = {a, b, c}

    def listed(**kw: object) -> set[str]:
        return cl.list(api.ContainerFilter(**kw)) & mine  # type: ignore[arg-type]

    assert listed() == mine
    assert listed(id=a[:10]) == {a}
    assert listed(state=api.ContainerStateValue(state=RUNNING)) == {a}
    assert listed(state=api.ContainerStateValue(state=CREATED)) == {b}
    assert listed(state=api.ContainerStateValue(state=EXITED)) == {c}
    assert listed(pod_sandbox_id=p1) == {a, b}
    assert listed(pod_sandbox_id=p2[:12]) == {c}
    assert listed(label_selector={"tier": "web"}) == {a, b}
    assert listed(label_selector={"app": "b", "tier": "web"}) == {b}
    assert listed(label_selector={"app": "zzz"}) == set()
    assert listed(pod_sandbox_id=p2, label_selector={"app": "a"}) == set()
    assert cl.status(a[:12]).status.id == a  # unique prefix, as crictl sends


def test_update_resources_reach_the_cgroup(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    cid = cl.run(pod, container_config(imgs.busybox_ref, **SLEEP))
    info = cl.info(cid)
    cg = info["runtimeSpec"]["linux"]["cgroupsPath"]
    with open(f"/proc/{info['pid']}/cgroup") as f:
        assert any(line.rstrip().endswith(cg) for line in f)
    resources = api.LinuxContainerResources(
        memory_limit_in_bytes=64 << 20, cpu_shares=256, cpu_quota=50_000, cpu_period=100_000
    )
    cl.rt.UpdateContainerResources(
        api.UpdateContainerResourcesRequest(container_id=cid, linux=resources)
    )

    def read(controller: str, name: str) -> int:
        with open(f"/sys/fs/cgroup/{controller}{cg}/{name}") as f:
            return int(f.read())

    assert read("memory", "memory.limit_in_bytes") == 64 << 20
    assert read("cpu", "cpu.shares") == 256
    assert read("cpu", "cpu.cfs_quota_us") == 50_000
    assert cl.status(cid).status.resources.linux.memory_limit_in_bytes == 64 << 20
    cl.stop(cid)
    code, _ = code_of(
        lambda: cl.rt.UpdateContainerResources(
            api.UpdateContainerResourcesRequest(container_id=cid, linux=resources)
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_tty_and_stdin(cl: Cluster, imgs: ImageSet) -> None:
    """tty: the process gets a pty (runc needs conmon's console socket for it; this used to
    fail at start) and its output is logged. stdin: a pipe conmon holds open, so a process
    reading it waits, as under CRI-O and containerd; without stdin it reads EOF at once."""
    pod = cl.run_pod()
    tty = cl.run(pod, container_config(imgs.busybox_ref, name="tty", tty=True, stdin=True,
                                       **sh("tty; exec sleep 1000")))  # fmt: skip
    wait_for(lambda: read_log(cl.log_file(pod, "tty")) != [], what="tty output")
    assert read_log(cl.log_file(pod, "tty"))[0] == ("stdout", "F", "/dev/pts/0")
    assert cl.exec(tty, "echo", "hi").stdout == b"hi\n"
    held = cl.run(pod, container_config(imgs.busybox_ref, name="held", stdin=True,
                                        **sh("cat; echo eof")))  # fmt: skip
    closed = cl.run(pod, container_config(imgs.busybox_ref, name="closed", **sh("cat; echo eof")))
    st = cl.wait_state(closed, EXITED)
    assert st.exit_code == 0 and read_log(cl.log_file(pod, "closed")) == [("stdout", "F", "eof")]
    assert cl.status(held).status.state == RUNNING and read_log(cl.log_file(pod, "held")) == []
    assert cl.status(tty).status.state == RUNNING


def test_reopen_log_after_rename(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    cid = cl.run(pod, container_config(
        imgs.busybox_ref, **sh("i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.02; done")
    ))  # fmt: skip
    path = cl.log_file(pod)
    wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, what="first log line")
    os.rename(path, path + ".1")
    cl.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid))
    assert os.path.exists(path)
    wait_for(lambda: len(read_log(path)) >= 2, what="lines in the new log")
    old = [int(t.split()[1]) for _, _, t in read_log(path + ".1")]
    new = [int(t.split()[1]) for _, _, t in read_log(path)]
    assert old == list(range(1, len(old) + 1)) and new[0] == old[-1] + 1
    # The log directory gone: refused, and the container keeps running (conmon used to exit on
    # the failed open, and the container died of SIGPIPE).
    log_dir = os.path.dirname(path)
    shutil.move(log_dir, log_dir + ".gone")
    code, message = code_of(
        lambda: cl.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and log_dir in message, message
    time.sleep(0.2)
    assert cl.status(cid).status.state == RUNNING
    shutil.move(log_dir + ".gone", log_dir)
    os.rename(path, path + ".2")
    cl.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid))
    wait_for(lambda: len(read_log(path)) >= 2, what="lines in the log after the refusal")
    cl.stop(cid)
    code, _ = code_of(
        lambda: cl.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_bad_input_gives_clear_codes_and_leaks_nothing(cl: Cluster, imgs: ImageSet) -> None:
    d = cl.daemon
    pod = cl.run_pod()
    ref = imgs.busybox_ref

    def snapshot() -> tuple[list[str], list[str], list[str], set[str]]:
        return (
            sorted(os.listdir(os.path.join(d.state, "containers"))),
            sorted(os.listdir(os.path.join(d.root, "containers"))),
            mounts_under(d.base),
            cl.list(),
        )

    before = snapshot()

    def create(config: api.ContainerConfig, pod_id: str = pod) -> tuple[grpc.StatusCode, str]:
        request = api.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=cl.pods[pod]
        )
        return code_of(lambda: cl.rt.CreateContainer(request, timeout=30))

    code, msg = create(container_config(ref, **SLEEP), pod_id="0" * 64)
    assert code == grpc.StatusCode.NOT_FOUND and "pod" in msg
    code, msg = create(container_config("127.0.0.1:1/no/such:1", **SLEEP))
    assert code == grpc.StatusCode.NOT_FOUND and "no/such" in msg
    code, msg = create(container_config(imgs.nocmd_ref))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no command" in msg
    for host_path in ("relative/dir", "/etc/hostname/below-a-file"):
        mount = api.Mount(container_path="/data", host_path=host_path)
        code, msg = create(container_config(ref, mounts=[mount], **SLEEP))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and host_path in msg, msg
    code, msg = create(api.ContainerConfig(image=api.ImageSpec(image=ref)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # What runc or the kernel would refuse at start is refused at create, naming the field.
    linux = api.LinuxContainerConfig
    for config, field in (
        (container_config(ref, envs=[api.KeyValue(key="A\0B", value="x")], **SLEEP),
         "config.envs[0].key contains a NUL byte"),
        (container_config(ref, working_dir="rel", **SLEEP), "working_dir"),
        (container_config(ref, linux=linux(resources=api.LinuxContainerResources(
            cpuset_cpus="abc")), **SLEEP), "linux.resources.cpuset_cpus"),
        (container_config(ref, linux=linux(security_context=api.LinuxContainerSecurityContext(
            run_as_user=api.Int64Value(value=2**40))), **SLEEP), "run_as_user"),
    ):  # fmt: skip
        code, msg = create(config)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and field in msg, msg
    assert snapshot() == before

    # As on containerd, a missing binary is found by `runc create`, which runs at start: the
    # container is then EXITED with StartError / 128, nothing of the runtime's is left, and
    # it is removed like any other.
    broken = cl.create(pod, container_config(ref, name="broken", command=["/no/such/binary"]))
    code, msg = code_of(lambda: cl.start(broken))
    assert code == grpc.StatusCode.UNKNOWN and "/no/such/binary" in msg, msg  # as containerd
    st = cl.status(broken).status
    assert (st.state, st.exit_code, st.reason) == (EXITED, 128, "StartError")
    assert "/no/such/binary" in st.message and st.started_at == 0 and st.finished_at > 0
    assert os.listdir(os.path.join(d.state, "oci", cl.handler)) == []
    code, _ = code_of(lambda: cl.start(broken))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    cl.remove(broken)
    assert snapshot() == before

    first = cl.create(pod, container_config(ref, name="dup", **SLEEP))
    code, msg = create(container_config(ref, name="dup", **SLEEP))
    assert code == grpc.StatusCode.ALREADY_EXISTS and first in msg
    assert cl.list() == before[3] | {first}
    for verb, call in (
        ("start", lambda: cl.start("0" * 64)),
        ("status", lambda: cl.status("0" * 64)),
        ("exec", lambda: cl.exec("0" * 64, "true")),
    ):
        code, _ = code_of(call)
        assert code == grpc.StatusCode.NOT_FOUND, verb
    cl.remove(first)
    assert snapshot() == before


# ---- pods, restarts, images --------------------------------------------------------------------


def test_pod_stop_and_remove_take_containers(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    ref = imgs.busybox_ref
    # Exits on SIGTERM: StopPodSandbox gives containers a grace period before SIGKILL.
    term = sh("trap 'exit 0' TERM; while :; do sleep 0.05; done")
    running = cl.run(pod, container_config(ref, name="r", **term))
    created = cl.create(pod, container_config(ref, name="c", **SLEEP))
    pid = cl.info(running)["pid"]
    cl.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    assert cl.status(running).status.state == EXITED and not pid_alive(pid)
    cl.rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    assert cl.list(api.ContainerFilter(pod_sandbox_id=pod)) == set()
    bundles = os.listdir(os.path.join(cl.daemon.state, "containers"))
    assert running not in bundles and created not in bundles
    assert not [m for m in mounts_under(cl.daemon.base) if running in m or created in m]


def test_kill9_daemon_keeps_containers(own: Cluster, imgs: ImageSet) -> None:
    d = own.daemon
    ref = imgs.busybox_ref
    gate = os.path.join(d.base, "gate")
    os.makedirs(gate)
    pod = own.run_pod()
    ticking = own.run(pod, container_config(
        ref, name="ticking", **sh("i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done")
    ))  # fmt: skip
    waiting = own.run(pod, container_config(
        ref, name="waiting", mounts=[api.Mount(container_path="/gate", host_path=gate)],
        **sh("echo waiting; while [ ! -e /gate/go ]; do sleep 0.02; done; exit 7"),
    ))  # fmt: skip
    done = own.run(pod, container_config(ref, name="done", **sh("echo bye; exit 2")))
    own.wait_state(done, EXITED)
    created = own.create(pod, container_config(ref, name="created", **sh("echo late; exit 0")))
    ticking_pid = own.info(ticking)["pid"]
    before = {c: own.status(c).status for c in (ticking, waiting, done, created)}
    log = own.log_file(pod, "ticking")
    wait_for(lambda: os.path.exists(log) and os.path.getsize(log) > 0, what="ticking log")

    d.kill9()
    go = os.path.join(gate, "go")
    with open(go, "w"):
        pass
    # The exit file's mtime comes from the kernel's coarse clock, which lags time.time_ns() by up
    # to a tick; the gate file is stamped by the same clock before `waiting` can see it.
    opened_at = os.stat(go).st_mtime_ns
    time.sleep(0.5)  # `waiting` exits while the daemon is down
    logged_while_down = len(read_log(log))
    d.start()

    st = own.status(ticking).status
    assert st.state == RUNNING and st.started_at == before[ticking].started_at
    assert own.info(ticking)["pid"] == ticking_pid and pid_alive(ticking_pid)
    ticks = [int(t.split()[1]) for _, _, t in read_log(log)]
    assert ticks == list(range(1, len(ticks) + 1)) and len(ticks) >= logged_while_down
    st = own.status(waiting).status
    assert (st.state, st.exit_code, st.reason) == (EXITED, 7, "Error")
    assert st.finished_at >= opened_at
    assert own.status(done).status == before[done]
    assert own.status(created).status == before[created]
    own.start(created)
    st = own.wait_state(created, EXITED)
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert read_log(own.log_file(pod, "created")) == [("stdout", "F", "late")]
    # The names stay taken by their containers across the restart.
    dup = api.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(ref, name="ticking", **SLEEP),
        sandbox_config=own.pods[pod],
    )  # fmt: skip
    code, _ = code_of(lambda: own.rt.CreateContainer(dup))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    own.stop(ticking, timeout=0)
    assert own.status(ticking).status.exit_code == 137 and not pid_alive(ticking_pid)


def test_image_removed_while_container_uses_it(own: Cluster, imgs: ImageSet) -> None:
    d = own.daemon
    layers = os.path.join(d.root, "images", "layers")
    pod = own.run_pod()
    cid = own.run(pod, container_config(imgs.busybox_ref, **SLEEP))
    in_use = set(os.listdir(layers))
    d.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=imgs.busybox_ref)))
    assert list(d.image.ListImages(api.ListImagesRequest()).images) == []
    assert set(os.listdir(layers)) >= in_use  # leased by the container
    assert own.exec(cid, "cat", "/etc/marker").stdout == b"busybox\n"
    code, _ = code_of(lambda: own.create(pod, container_config(imgs.busybox_ref, name="n")))
    assert code == grpc.StatusCode.NOT_FOUND

    def gc_round() -> None:  # pulling and removing another image runs the image GC
        other = pull(d, imgs.other_ref)
        d.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=other)))

    gc_round()
    assert set(os.listdir(layers)) >= in_use
    assert own.exec(cid, "sh", "-c", "echo ok > /tmp/f; cat /tmp/f /etc/marker").stdout == (
        b"ok\nbusybox\n"
    )
    own.stop(cid)
    own.remove(cid)
    gc_round()
    assert [n for n in os.listdir(layers) if not n.startswith(".")] == []


def test_restart_with_sigterm_leaves_containers_running(own: Cluster, imgs: ImageSet) -> None:
    pod = own.run_pod()
    cid = own.run(pod, container_config(imgs.busybox_ref, **SLEEP))
    pid = own.info(cid)["pid"]
    own.daemon.restart()
    assert own.status(cid).status.state == RUNNING and own.info(cid)["pid"] == pid
    os.kill(pid, signal.SIGKILL)  # the container's init, by PID: its exit is seen
    st = own.wait_state(cid, EXITED)
    assert (st.exit_code, st.reason) == (137, "Error")


def test_create_by_image_id_as_kubelet_does(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    image = api.ImageSpec(image=imgs.busybox.config_digest, user_specified_image="busybox:1")
    cid = cl.run(pod, api.ContainerConfig(
        metadata=api.ContainerMetadata(name="by-id"), image=image, log_path="by-id.log", **SLEEP
    ))  # fmt: skip
    st = cl.status(cid).status
    assert st.image.image == imgs.busybox_ref and st.image.user_specified_image == "busybox:1"
    assert st.image_id == imgs.busybox.config_digest
    (listed,) = cl.rt.ListContainers(
        api.ListContainersRequest(filter=api.ContainerFilter(id=cid))
    ).containers
    assert listed.image.user_specified_image == "busybox:1"


def test_image_names_agree_with_image_status(
    make_daemon: Callable[..., Daemon], imgs: ImageSet
) -> None:
    """However the image was named (tag, repo digest, image ID, a name served by a mirror),
    ContainerStatus and ListContainers name it as ImageStatus does; a tag pulled later shows up,
    and all of it holds after a daemon restart."""
    mirrored = "mirror.invalid/ctest/busybox"
    d = make_daemon(f'[registry.mirrors."mirror.invalid"]\nendpoints = ["{imgs.registry.url}"]\n')
    own = Cluster(d)
    try:
        pull(d, imgs.busybox_ref)
        pull(d, f"{mirrored}:1")
        pod = own.run_pod()
        by = {
            "tag": imgs.busybox_ref,
            "digest": imgs.busybox_repo_digest,
            "id": imgs.busybox.config_digest,
            "mirror": f"{mirrored}:1",
        }
        cids = {how: own.create(pod, container_config(ref, name=how, **SLEEP))
                for how, ref in by.items()}  # fmt: skip

        def check() -> None:
            image = d.image.ImageStatus(
                api.ImageStatusRequest(image=api.ImageSpec(image=imgs.busybox.config_digest))
            ).image
            assert image.id == imgs.busybox.config_digest
            listed = {
                c.id: c for c in own.rt.ListContainers(api.ListContainersRequest()).containers
            }
            for how, cid in cids.items():
                st = own.status(cid).status
                assert st.image_id == image.id, how
                assert st.image_ref == image.repo_digests[0], how
                assert st.image.image == image.repo_tags[0], how
                assert st.image.user_specified_image == by[how], how
                assert listed[cid].image_ref == listed[cid].image_id == image.id, how
                assert listed[cid].image.image == image.repo_tags[0], how

        check()
        # A later tag of the same image: the containers' status follows the image store.
        images.push(imgs.registry.url, "ctest/busybox", imgs.busybox, ["0"])
        pull(d, f"{imgs.registry.host}/ctest/busybox:0")
        check()
        assert own.status(cids["tag"]).status.image.image.endswith("/ctest/busybox:0")
        d.restart()
        check()
    finally:
        own.cleanup()
        force_cleanup(d)


def test_image_volume_is_read_only_noexec_and_pins_its_image(cl: Cluster, imgs: ImageSet) -> None:
    """KEP-4639: an image named in a mount is mounted read-only and noexec at the container
    path (or its image_sub_path); while the container exists the image is pinned and
    RemoveImage refuses it; afterwards nothing stays mounted and the image can go."""
    d = cl.daemon
    volume_id = d.image.ImageStatus(  # kubelet pulls it, then names it by the ID it got
        api.ImageStatusRequest(image=api.ImageSpec(image=pull(d, imgs.other_ref)))
    ).image.id
    pod = cl.run_pod()
    before = mounts_under(d.base)

    def image_mount(path: str, **kw: object) -> api.Mount:
        kw.setdefault("readonly", True)
        return api.Mount(container_path=path, image=api.ImageSpec(image=volume_id), **kw)  # type: ignore[arg-type]

    def status(ref: str) -> api.Image:
        request = api.ImageStatusRequest(image=api.ImageSpec(image=ref))
        image: api.Image = d.image.ImageStatus(request).image
        return image

    cid = cl.run(pod, container_config(imgs.busybox_ref, mounts=[
        image_mount("/vol"), image_mount("/vol-etc", image_sub_path="etc")], **SLEEP))  # fmt: skip
    assert cl.exec(cid, "cat", "/vol/etc/marker", "/vol-etc/marker").stdout == b"other\nother\n"
    assert cl.exec(cid, "cat", "/etc/marker").stdout == b"busybox\n"
    r = cl.exec(cid, "touch", "/vol/x")
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr
    r = cl.exec(cid, "/vol/bin/busybox", "true")
    assert r.exit_code != 0 and b"ermission denied" in r.stderr  # noexec
    mounts = cl.exec(cid, "cat", "/proc/self/mounts").stdout.decode().splitlines()
    (vol,) = [m.split()[3].split(",") for m in mounts if m.split()[1] == "/vol"]
    assert {"ro", "noexec", "nosuid", "nodev"} <= set(vol)

    assert status(volume_id).pinned and not status(imgs.busybox_ref).pinned
    listed = {i.id: i.pinned for i in d.image.ListImages(api.ListImagesRequest()).images}
    assert listed[volume_id] and not listed[imgs.busybox.config_digest]
    code, msg = code_of(lambda: d.image.RemoveImage(
        api.RemoveImageRequest(image=api.ImageSpec(image=imgs.other_ref))))  # fmt: skip
    assert code == grpc.StatusCode.FAILED_PRECONDITION and cid in msg, msg
    assert status(volume_id).id == volume_id

    cl.stop(cid)
    cl.remove(cid)
    assert mounts_under(d.base) == before
    assert not status(volume_id).pinned
    d.image.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=volume_id)))
    assert status(volume_id).id == ""


def test_bad_image_volumes_are_refused_and_leak_nothing(cl: Cluster, imgs: ImageSet) -> None:
    d = cl.daemon
    pod = cl.run_pod()
    before = (mounts_under(d.base), cl.list())
    image = api.ImageSpec(image=imgs.busybox_ref)
    for mount, code, words in (
        (api.Mount(container_path="/v", readonly=True,
                   image=api.ImageSpec(image="127.0.0.1:1/no/such:1")),
         grpc.StatusCode.NOT_FOUND, "no/such"),
        (api.Mount(container_path="/v", image=image), grpc.StatusCode.INVALID_ARGUMENT,
         "readonly"),
        (api.Mount(container_path="/v", readonly=True, image=image, host_path="/tmp"),
         grpc.StatusCode.INVALID_ARGUMENT, "host_path"),
        (api.Mount(container_path="/v", readonly=True, image=image, image_sub_path="../etc"),
         grpc.StatusCode.INVALID_ARGUMENT, "leaves the image"),
        # Checked once the image is mounted: what was mounted must go again.
        (api.Mount(container_path="/v", readonly=True, image=image, image_sub_path="etc/passwd"),
         grpc.StatusCode.INVALID_ARGUMENT, "not a directory"),
    ):  # fmt: skip
        config = container_config(imgs.busybox_ref, mounts=[mount], **SLEEP)
        got, msg = code_of(lambda c=config: cl.create(pod, c))  # type: ignore[misc]
        assert got == code and words in msg and "/v" in msg, msg
    assert (mounts_under(d.base), cl.list()) == before


def test_oom_kill_reports_oomkilled(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    config = container_config(imgs.busybox_ref, **sh("x=$(yes | head -c 200000000); echo $x"))
    config.linux.resources.memory_limit_in_bytes = 16 << 20
    cid = cl.run(pod, config)
    st = cl.wait_state(cid, EXITED, timeout=30)
    assert (st.exit_code, st.reason) == (137, "OOMKilled")


def test_dead_monitor_never_wedges_a_container(cl: Cluster, imgs: ImageSet) -> None:
    """conmon killed (the OOM killer may pick it: this host denies it a negative oom_score_adj).
    The container runs on; once its process is gone too it is EXITED with the lost exit code
    (255, Unknown) instead of RUNNING forever, and Stop and Remove still work."""
    pod = cl.run_pod()
    d = cl.daemon

    def kill_monitor(cid: str) -> int:
        with open(os.path.join(d.state, "containers", cid, "conmon.pid")) as f:
            conmon = int(f.read())
        os.kill(conmon, signal.SIGKILL)
        wait_for(lambda: not pid_alive(conmon), what="conmon gone")
        return int(cl.info(cid)["pid"])

    dies = cl.run(pod, container_config(imgs.busybox_ref, name="dies", **SLEEP))
    init = kill_monitor(dies)
    assert cl.status(dies).status.state == RUNNING and pid_alive(init)
    os.kill(init, signal.SIGKILL)
    st = cl.wait_state(dies, EXITED)
    assert (st.exit_code, st.reason) == (255, "Unknown") and "conmon" in st.message, st
    assert st.finished_at >= st.started_at > 0

    stopped = cl.run(pod, container_config(imgs.busybox_ref, name="stopped", **SLEEP))
    init = kill_monitor(stopped)
    cl.stop(stopped, timeout=1)  # used to fail at once: "did not exit after SIGKILL"
    st = cl.status(stopped).status
    assert (st.state, st.exit_code, st.reason) == (EXITED, 255, "Unknown")
    assert not pid_alive(init)
    for cid in (dies, stopped):
        cl.remove(cid)
    assert cl.list() == set()


SLOW_RUNC = """#!/bin/sh
for a in "$@"; do
  if [ "$a" = create ] && [ -e {dir}/slow ]; then touch {dir}/creating; sleep 1; fi
done
runc "$@"; rc=$?
for a in "$@"; do [ "$a" = create ] && touch {dir}/created; done
exit $rc
"""


def test_kill9_mid_start_leaves_it_created(
    make_daemon: Callable[..., Daemon], imgs: ImageSet, tmp_path: str
) -> None:
    """`runc create` runs at StartContainer. A daemon killed while it runs comes back with the
    container CREATED and the runtime's half-made container deleted (as containerd deletes a
    created-but-unstarted task on restart); it can then be started normally."""
    work = str(tmp_path)
    wrapper = os.path.join(work, "slowrunc")
    with open(wrapper, "w") as f:
        f.write(SLOW_RUNC.format(dir=work))
    os.chmod(wrapper, 0o755)
    d = make_daemon(f'[runtimes.slow]\npath = "{wrapper}"\n')
    own = Cluster(d)
    try:
        pull(d, imgs.busybox_ref)
        config = host_pod_config(d)
        pod = str(d.runtime.RunPodSandbox(
            api.RunPodSandboxRequest(config=config, runtime_handler="slow"), timeout=30
        ).pod_sandbox_id)  # fmt: skip
        own.pods[pod] = config
        cid = own.create(pod, container_config(imgs.busybox_ref, **SLEEP))
        before = own.status(cid).status
        assert before.state == CREATED
        assert not os.path.exists(os.path.join(d.state, "oci", "slow", cid))  # nothing runs yet
        assert not os.path.exists(own.log_file(pod))  # conmon makes it at start
        open(os.path.join(work, "slow"), "w").close()
        future = d.runtime.StartContainer.future(
            api.StartContainerRequest(container_id=cid), timeout=30
        )
        wait_for(lambda: os.path.exists(os.path.join(work, "creating")), what="start under way")
        d.kill9()
        with pytest.raises(grpc.RpcError):
            future.result()
        wait_for(lambda: os.path.exists(os.path.join(work, "created")), what="runc create done")
        os.unlink(os.path.join(work, "slow"))
        d.start()
        assert own.list() == {cid}
        assert own.status(cid).status == before
        assert not os.path.exists(os.path.join(d.state, "oci", "slow", cid))
        bundle = os.path.join(d.state, "containers", cid)
        assert sorted(os.listdir(bundle)) == ["config.json", "rootfs"]
        cgroup = f"/sys/fs/cgroup/pids/criruntime/{pod}/{cid}"
        wait_for(lambda: not os.path.exists(cgroup), timeout=5, what="container cgroup removed")
        own.start(cid)
        st = own.status(cid).status
        assert st.state == RUNNING and st.started_at > 0
        assert pid_alive(own.info(cid)["pid"])
    finally:
        own.cleanup()
        force_cleanup(d)

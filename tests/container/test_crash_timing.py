"""kill -9 of the daemon at exact steps of StartContainer, StopContainer and recovery itself,
landed with the daemon's failpoints (criruntime/failpoints.py): each interleaving ends with the
container in the state the CRI promises. CREATED if start had not let the process go (and it can
be started again), RUNNING with the right pid and started_at if it had, EXITED with the real
code once its process exited."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from criruntime import failpoints
from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import START_TIMEOUT, Daemon
from tests.container.daemon_env import (
    Cluster,
    ImageSet,
    container_config,
    force_cleanup,
    pid_alive,
    pull,
    sh,
    wait_for,
)

CREATED = api.ContainerState.CONTAINER_CREATED
RUNNING = api.ContainerState.CONTAINER_RUNNING
EXITED = api.ContainerState.CONTAINER_EXITED


class Crash:
    """A daemon whose next start arms failpoints, and the pod and container a test uses."""

    def __init__(self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch, imgs: ImageSet) -> None:
        self.daemon = daemon
        self.cluster = Cluster(daemon)
        self.monkeypatch = monkeypatch
        self.imgs = imgs
        monkeypatch.setenv(failpoints.DIR_ENV, daemon.base)

    def arm(self, *names: str) -> None:
        self.monkeypatch.setenv(failpoints.ENV, ",".join(names))

    def disarm(self) -> None:
        self.monkeypatch.delenv(failpoints.ENV, raising=False)

    def reached(self, name: str) -> None:
        marker = os.path.join(self.daemon.base, name)
        wait_for(lambda: os.path.exists(marker), timeout=30, what=f"failpoint {name}")
        os.unlink(marker)

    def start_daemon(self, *armed: str) -> None:
        self.arm(*armed) if armed else self.disarm()
        self.daemon.start()

    def start_daemon_paused_in_recovery(self, name: str) -> None:
        """Recovery runs before the socket is served, so this waits for the failpoint only."""
        self.arm(name)
        d = self.daemon
        with open(d.log_path, "ab") as log:
            d.proc = subprocess.Popen(d.command(), stdout=log, stderr=log)
        self.reached(name)

    def container(self, script: str) -> str:
        pod = self.cluster.run_pod()
        return self.cluster.create(pod, container_config(self.imgs.busybox_ref, **sh(script)))

    def start_until(self, cid: str, name: str) -> None:
        """StartContainer, killed with the daemon once it reaches failpoint `name`."""
        future = self.daemon.runtime.StartContainer.future(
            api.StartContainerRequest(container_id=cid), timeout=60
        )
        self.reached(name)
        self.daemon.kill9()
        with pytest.raises(grpc.RpcError):
            future.result()

    def status(self, cid: str) -> api.ContainerStatus:
        return self.cluster.status(cid).status

    def bundle(self, cid: str) -> str:
        return os.path.join(self.daemon.state, "containers", cid)

    def pidfile(self, cid: str) -> int:
        with open(os.path.join(self.bundle(cid), "pidfile")) as f:
            return int(f.read())


@pytest.fixture
def crash(
    make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch, imgs: ImageSet
) -> Iterator[Crash]:
    monkeypatch.delenv(failpoints.ENV, raising=False)
    d = make_daemon(start=False)
    c = Crash(d, monkeypatch, imgs)
    try:
        yield c
    finally:
        c.disarm()  # cleanup runs on a daemon without failpoints
        if d.proc is not None and d.proc.poll() is None:
            d.kill9()
        c.cluster.cleanup()
        force_cleanup(d)


def _restarts_and_starts_again(crash: Crash, cid: str) -> None:
    crash.cluster.start(cid)
    st = crash.status(cid)
    assert st.state == RUNNING and st.started_at > 0
    assert pid_alive(crash.cluster.info(cid)["pid"])


def test_kill_before_runc_create_leaves_it_created(crash: Crash) -> None:
    crash.start_daemon(failpoints.START_BEFORE_CREATE)
    pull(crash.daemon, crash.imgs.busybox_ref)
    cid = crash.container("exec sleep 1000")
    crash.start_until(cid, failpoints.START_BEFORE_CREATE)
    crash.start_daemon()
    st = crash.status(cid)
    assert (st.state, st.started_at, st.exit_code) == (CREATED, 0, 0)
    _restarts_and_starts_again(crash, cid)


def test_kill_between_create_and_start_leaves_it_created(crash: Crash) -> None:
    crash.start_daemon(failpoints.START_AFTER_CREATE)
    pull(crash.daemon, crash.imgs.busybox_ref)
    cid = crash.container("exec sleep 1000")
    crash.start_until(cid, failpoints.START_AFTER_CREATE)
    crash.start_daemon()
    st = crash.status(cid)
    assert (st.state, st.started_at, st.exit_code) == (CREATED, 0, 0)
    assert sorted(os.listdir(crash.bundle(cid))) == ["config.json", "rootfs"]
    _restarts_and_starts_again(crash, cid)


def test_kill_while_releasing_the_exec_fifo_leaves_it_created_not_exited_1(crash: Crash) -> None:
    """The daemon held the exec fifo open when it died, after runc init had opened it but before
    init wrote: init's write fails ("write exec fifo: broken pipe") and it exits 1 without
    running the process. This test leaves exactly that: the daemon is killed at the step, and
    the fifo is opened and closed again while init, woken by the open, cannot run yet (it is
    pinned to our CPU, where we run SCHED_FIFO until the close)."""
    crash.start_daemon(failpoints.START_AFTER_CREATE)
    pull(crash.daemon, crash.imgs.busybox_ref)
    # runc's init writes the fifo that the daemon reads (crun's reads what `crun start`,
    # a process that outlives the daemon, writes): the race is runc's.
    crash.cluster.handler = "runc"
    cid = crash.container("exec sleep 1000")
    crash.start_until(cid, failpoints.START_AFTER_CREATE)
    init = crash.pidfile(cid)
    wait_for(lambda: _wchan(init) == "wait_for_partner", what="init blocked opening the fifo")
    fifo = os.path.join(crash.daemon.state, "oci", "runc", cid, "exec.fifo")
    _open_and_close_before(init, fifo)
    exit_file = os.path.join(crash.bundle(cid), "persist", "exit")
    wait_for(lambda: os.path.exists(exit_file), what="init's exit recorded")
    with open(exit_file) as f:
        assert f.read().strip() == "1"  # what used to become EXITED 1
    crash.start_daemon()
    st = crash.status(cid)
    assert (st.state, st.exit_code) == (CREATED, 0), st
    _restarts_and_starts_again(crash, cid)


def _open_and_close_before(pid: int, fifo: str) -> None:
    """Opens and closes `fifo` for reading before `pid` (blocked opening it for writing) can
    run again: its open then succeeds, and its write finds no reader."""
    cpu = min(os.sched_getaffinity(0))
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(pid, {cpu})
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    try:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, mine)


def _wchan(pid: int) -> str:
    with open(f"/proc/{pid}/wchan") as f:
        return f.read().strip()


def test_kill_after_start_gives_running_with_its_pid_and_start_time(crash: Crash) -> None:
    crash.start_daemon(failpoints.START_AFTER_START)
    pull(crash.daemon, crash.imgs.busybox_ref)
    cid = crash.container("exec sleep 1000")
    asked = time.time_ns()
    crash.start_until(cid, failpoints.START_AFTER_START)
    killed = time.time_ns()
    time.sleep(0.2)
    crash.start_daemon()
    st = crash.status(cid)
    assert st.state == RUNNING
    assert asked <= st.started_at <= killed  # the start's time, not the recovery's
    pid = crash.cluster.info(cid)["pid"]
    assert pid == crash.pidfile(cid) and pid_alive(pid)
    crash.cluster.stop(cid, timeout=0)
    st = crash.status(cid)
    assert (st.state, st.exit_code) == (EXITED, 137)


def test_kill_after_start_of_a_quick_process_gives_its_real_exit(crash: Crash) -> None:
    crash.start_daemon(failpoints.START_AFTER_START)
    pull(crash.daemon, crash.imgs.busybox_ref)
    cid = crash.container("exit 7")
    asked = time.time_ns()
    crash.start_until(cid, failpoints.START_AFTER_START)
    crash.start_daemon()
    st = crash.status(cid)
    assert (st.state, st.exit_code, st.reason) == (EXITED, 7, "Error")
    assert asked <= st.started_at <= st.finished_at


def test_second_kill_during_recovery_of_a_cut_short_start(crash: Crash) -> None:
    """Recovery undoes a cut-short start by killing its init (exit 137) and resetting the
    bundle; a daemon killed in between used to read that 137 as the container's exit."""
    crash.start_daemon(failpoints.START_AFTER_CREATE)
    pull(crash.daemon, crash.imgs.busybox_ref)
    cid = crash.container("exec sleep 1000")
    crash.start_until(cid, failpoints.START_AFTER_CREATE)
    crash.start_daemon_paused_in_recovery(failpoints.DISCARD_AFTER_DELETE)
    assert crash.daemon.proc is not None
    crash.daemon.proc.kill()
    crash.daemon.proc.wait(START_TIMEOUT)
    with open(os.path.join(crash.bundle(cid), "persist", "exit")) as f:
        assert f.read().strip() == "137"  # the undo's kill, recorded by conmon
    crash.start_daemon()
    st = crash.status(cid)
    assert (st.state, st.exit_code) == (CREATED, 0), st
    assert sorted(os.listdir(crash.bundle(cid))) == ["config.json", "rootfs"]
    _restarts_and_starts_again(crash, cid)


def test_kill_during_stop_ends_with_the_real_exit_code(crash: Crash) -> None:
    crash.start_daemon(failpoints.STOP_AFTER_SIGNAL)
    pull(crash.daemon, crash.imgs.busybox_ref)
    cid = crash.container("trap 'exit 3' TERM; while :; do sleep 0.05; done")
    crash.cluster.start(cid)
    future = crash.daemon.runtime.StopContainer.future(
        api.StopContainerRequest(container_id=cid, timeout=30), timeout=60
    )
    crash.reached(failpoints.STOP_AFTER_SIGNAL)
    crash.daemon.kill9()
    with pytest.raises(grpc.RpcError):
        future.result()
    crash.start_daemon()
    wait_for(lambda: crash.status(cid).state == EXITED, what="exit seen after restart")
    assert crash.status(cid).exit_code == 3


def test_kill_during_stop_of_a_process_ignoring_the_signal_leaves_it_running(
    crash: Crash,
) -> None:
    crash.start_daemon(failpoints.STOP_AFTER_SIGNAL)
    pull(crash.daemon, crash.imgs.busybox_ref)
    cid = crash.container("trap '' TERM; while :; do sleep 0.05; done")
    crash.cluster.start(cid)
    pid = crash.cluster.info(cid)["pid"]
    future = crash.daemon.runtime.StopContainer.future(
        api.StopContainerRequest(container_id=cid, timeout=3600), timeout=60
    )
    crash.reached(failpoints.STOP_AFTER_SIGNAL)
    crash.daemon.kill9()
    with pytest.raises(grpc.RpcError):
        future.result()
    crash.start_daemon()
    st = crash.status(cid)
    assert st.state == RUNNING and crash.cluster.info(cid)["pid"] == pid
    crash.cluster.stop(cid, timeout=0)  # kubelet asks again; this one completes
    assert (crash.status(cid).state, crash.status(cid).exit_code) == (EXITED, 137)

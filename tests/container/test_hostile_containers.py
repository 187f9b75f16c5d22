"""Hostile container requests through the real daemon, each exactly as a hostile or unlucky
client sent it: none freezes the daemon, none is INTERNAL, none leaves runc to say it late."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container.seccomp_profile import MAX_PROFILE_BYTES
from tests.conftest import Daemon
from tests.container.daemon_env import (
    Cluster,
    ImageSet,
    container_config,
    module_daemon,
    sh,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SLEEP = sh("exec sleep 1000")
IGNORES_TERM = sh("trap '' TERM; while :; do sleep 0.1; done")


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details() or ""


@pytest.fixture(scope="module")
def shared(imgs: ImageSet) -> Iterator[Daemon]:
    with module_daemon(imgs.busybox_ref) as d:
        yield d


@pytest.fixture
def cl(shared: Daemon) -> Iterator[Cluster]:
    cluster = Cluster(shared)
    try:
        yield cluster
    finally:
        cluster.cleanup()


def _localhost_seccomp(imgs: ImageSet, path: str) -> api.ContainerConfig:
    config = container_config(imgs.busybox_ref, **SLEEP)
    config.linux.security_context.seccomp.profile_type = api.SecurityProfile.ProfileType.Localhost
    config.linux.security_context.seccomp.localhost_ref = path
    return config


def _profiles(base: str) -> dict[str, str]:
    fifo = os.path.join(base, "fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    huge = os.path.join(base, "huge.json")
    with open(huge, "wb") as f:
        f.truncate(MAX_PROFILE_BYTES * 4)
    deep = os.path.join(base, "deep.json")
    with open(deep, "w") as f:
        f.write("[" * 100_000 + "]" * 100_000)
    return {
        "a FIFO": fifo,
        "/dev/zero": "/dev/zero",
        "a huge file": huge,
        "a profile nested 100,000 deep": deep,
    }


@pytest.mark.parametrize(
    "case", ["a FIFO", "/dev/zero", "a huge file", "a profile nested 100,000 deep"]
)
def test_localhost_seccomp_profiles_that_used_to_freeze_or_crash(
    cl: Cluster, imgs: ImageSet, case: str
) -> None:
    path = _profiles(cl.daemon.base)[case]
    pod = cl.run_pod()
    result: dict[str, tuple[grpc.StatusCode, str]] = {}

    def create() -> None:
        result["create"] = code_of(lambda: cl.create(pod, _localhost_seccomp(imgs, path)))

    worker = threading.Thread(target=create)
    worker.start()
    # Meanwhile every other RPC answers: the profile is never read on the event loop.
    started = time.monotonic()
    while worker.is_alive() and time.monotonic() - started < 3:
        cl.rt.Version(api.VersionRequest(), timeout=2)
    worker.join(10)
    assert not worker.is_alive()
    code, details = result["create"]
    assert code == INVALID, details
    assert "seccomp profile" in details and len(details) < 300, details
    assert cl.list() == set()  # nothing left half-made


def test_update_with_a_huge_cpuset_range(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    cid = cl.run(pod, container_config(imgs.busybox_ref, **SLEEP))
    started = time.monotonic()
    code, details = code_of(
        lambda: cl.rt.UpdateContainerResources(
            api.UpdateContainerResourcesRequest(
                container_id=cid, linux=api.LinuxContainerResources(cpuset_cpus="0-2000000")
            ),
            timeout=10,
        )
    )
    assert code == INVALID and "cpuset_cpus" in details and len(details) < 300, details
    assert time.monotonic() - started < 5  # validation, not work: fast even on a busy host


def _bounding_set() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))


def test_a_capability_outside_the_bounding_set_is_refused_at_create(
    cl: Cluster, imgs: ImageSet
) -> None:
    # CAP_SYS_RESOURCE (bit 24) is what this VM drops; elsewhere the check has nothing to find.
    if _bounding_set() >> 24 & 1:
        pytest.skip("this host's bounding set holds CAP_SYS_RESOURCE")
    pod = cl.run_pod()
    config = container_config(imgs.busybox_ref, **SLEEP)
    config.linux.security_context.capabilities.add_capabilities.append("SYS_RESOURCE")
    code, details = code_of(lambda: cl.create(pod, config))
    assert code == INVALID and "CAP_SYS_RESOURCE" in details and "bounding set" in details


def test_start_in_a_stopped_pod_is_failed_precondition(cl: Cluster, imgs: ImageSet) -> None:
    pod = cl.run_pod()
    cid = cl.create(pod, container_config(imgs.busybox_ref, **SLEEP))
    cl.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    code, details = code_of(lambda: cl.start(cid))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, details
    assert "not ready" in details and "lstat" not in details
    assert cl.status(cid).status.state == api.ContainerState.CONTAINER_CREATED


def test_stop_with_timeout_0_cuts_a_stop_with_timeout_3600_short(
    cl: Cluster, imgs: ImageSet
) -> None:
    pod = cl.run_pod()
    cid = cl.run(pod, container_config(imgs.busybox_ref, **IGNORES_TERM))
    long = cl.rt.StopContainer.future(
        api.StopContainerRequest(container_id=cid, timeout=3600), timeout=60
    )
    time.sleep(0.5)
    started = time.monotonic()
    cl.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0), timeout=10)
    long.result(timeout=10)
    assert time.monotonic() - started < 5  # used to be DEADLINE_EXCEEDED after 20 s
    st = cl.status(cid).status
    assert st.state == api.ContainerState.CONTAINER_EXITED and st.exit_code == 137

"""UpdatePodSandboxResources through the real daemon: the pod cgroup gets resources plus
overhead, the stored config keeps them, bad input is refused."""

from __future__ import annotations

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.sandbox.podnet import info, pod_config, remove_pod, run_pod, stop_pod

MiB = 1 << 20


def update(daemon: Daemon, pod_id: str, **kw: api.LinuxContainerResources) -> None:
    daemon.runtime.UpdatePodSandboxResources(
        api.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod_id, **kw), timeout=10
    )


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        assert callable(call)
        call()
    return e.value.code()


def test_update_pod_resources(daemon: Daemon) -> None:
    config = pod_config()
    config.linux.security_context.namespace_options.network = api.NamespaceMode.NODE
    pod = run_pod(daemon, config)
    try:
        cgroup = info(daemon, pod)["cgroupParent"]
        update(
            daemon,
            pod,
            resources=api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB, cpu_shares=512),
            overhead=api.LinuxContainerResources(memory_limit_in_bytes=16 * MiB, cpu_shares=10),
        )
        assert int(read(f"/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes")) == 80 * MiB
        assert read(f"/sys/fs/cgroup/cpu{cgroup}/cpu.shares") == "522"
        stored = info(daemon, pod)["config"]["linux"]
        assert stored["resources"]["memoryLimitInBytes"] == str(64 * MiB)
        assert stored["overhead"]["memoryLimitInBytes"] == str(16 * MiB)
        bad = api.LinuxContainerResources(memory_limit_in_bytes=-1)
        assert code(lambda: update(daemon, pod, resources=bad)) == grpc.StatusCode.INVALID_ARGUMENT
        assert code(lambda: update(daemon, "f" * 64)) == grpc.StatusCode.NOT_FOUND
        assert code(lambda: update(daemon, "")) == grpc.StatusCode.INVALID_ARGUMENT
        stop_pod(daemon, pod)
        one = api.LinuxContainerResources(cpu_shares=2)
        assert code(lambda: update(daemon, pod, resources=one)) == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
    finally:
        remove_pod(daemon, pod)


def test_checkpoint_says_why_it_is_unimplemented(daemon: Daemon) -> None:
    with pytest.raises(grpc.RpcError) as e:
        daemon.runtime.CheckpointContainer(
            api.CheckpointContainerRequest(container_id="x"), timeout=10
        )
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CRIU" in (e.value.details() or "")

"""The request shapes kubelet's kuberuntime builds beyond the recorded pod: each QoS class with
its cgroup parent and OOM score, host-network and shared-PID pods, a restricted security
context, and a probe whose 1-second ExecSync timeout expires."""

from __future__ import annotations

import json
import os
import time

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.cgroupfs import Cgroupfs
from criruntime.cgroups.host import HostCgroups
from tests.container.daemon_env import cgroup_file, cgroup_path
from tests.kubelet.kuberuntime import Kubelet, Limits, Pod
from tests.kubelet.node import Node

RUNNING = api.ContainerState.CONTAINER_RUNNING
SLEEP = ["sh", "-c", "exec sleep 1000"]
HOST = HostCgroups.detect(Cgroupfs.detect())


def oom_score_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


@pytest.mark.parametrize(
    ("qos", "limits", "shares", "quota", "memory"),
    [
        ("guaranteed", Limits(500, 500, 64 << 20, 64 << 20), 512, 50_000, 64 << 20),
        ("burstable", Limits(100, 500, 32 << 20, 64 << 20), 102, 50_000, 64 << 20),
        ("besteffort", Limits(), 2, 0, 0),
    ],
)
def test_qos_classes(
    node: Node, kubelet: Kubelet, qos: str, limits: Limits, shares: int, quota: int, memory: int
) -> None:
    pod = Pod(node, qos=qos, containers=[limits])
    pod_id = kubelet.run_pod(pod)
    cid = kubelet.run(pod_id, pod.container_config("app", SLEEP, limits))
    assert kubelet.status(cid).state == RUNNING
    pid = kubelet.pid(cid)
    # The container's cgroup is below the pod cgroup kubelet made, in the QoS tier it picked.
    assert cgroup_path(pid, "memory") == f"{pod.cgroup_parent}/{cid}"
    assert int(cgroup_file(pid, "cpu", "cpu.shares")) == shares
    assert int(cgroup_file(pid, "cpu", "cpu.cfs_quota_us")) == (quota or -1)
    if memory:
        assert int(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == memory
    # OOM score: -997 for Guaranteed (clamped to 0 where the host denies negative values, with a
    # warning in the container's status), 1000 for BestEffort, 2..999 for Burstable.
    wanted = pod.oom_score_adj(limits)
    if wanted < 0:
        assert oom_score_adj(pid) in (wanted, 0)
        if oom_score_adj(pid) == 0:
            assert "oom_score_adj -997 clamped to 0" in node.daemon.logs()
    else:
        assert oom_score_adj(pid) == wanted
    kubelet.teardown(pod_id)
    assert all(not left for left in node.leftovers().values()), node.leftovers()


def test_host_network_pod(node: Node, kubelet: Kubelet) -> None:
    pod = Pod(node, host_network=True)
    pod_id = kubelet.run_pod(pod)
    status = node.daemon.runtime.PodSandboxStatus(
        api.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=10
    ).status
    assert status.network.ip == ""  # kubelet uses the node's IPs
    cid = kubelet.run(pod_id, pod.container_config("app", SLEEP))
    pid = kubelet.pid(cid)
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    assert kubelet.exec(cid, "hostname").stdout.decode().strip() == os.uname().nodename
    kubelet.teardown(pod_id)
    assert all(not left for left in node.leftovers().values()), node.leftovers()


def test_shared_pid_namespace_pod(node: Node, kubelet: Kubelet) -> None:
    pod = Pod(node, share_pid=True)
    pod_id = kubelet.run_pod(pod)
    a = kubelet.run(pod_id, pod.container_config("a", ["sh", "-c", "exec sleep 1001"]))
    b = kubelet.run(pod_id, pod.container_config("b", SLEEP))
    assert os.readlink(f"/proc/{kubelet.pid(a)}/ns/pid") == os.readlink(
        f"/proc/{kubelet.pid(b)}/ns/pid"
    )
    seen = kubelet.exec(b, "ps", "-o", "args").stdout.decode()
    assert "sleep 1001" in seen, seen
    kubelet.teardown(pod_id)
    assert all(not left for left in node.leftovers().values()), node.leftovers()


def test_restricted_security_context(node: Node, kubelet: Kubelet) -> None:
    """runAsUser 1000, readOnlyRootFilesystem, drop ALL + add NET_BIND_SERVICE,
    allowPrivilegeEscalation false: what kubelet sends for a "restricted" pod."""
    pod = Pod(node)
    pod_id = kubelet.run_pod(pod)
    security = api.LinuxContainerSecurityContext(
        run_as_user=api.Int64Value(value=1000),
        readonly_rootfs=True,
        no_new_privs=True,
        capabilities=api.Capability(
            drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"]
        ),
    )
    cid = kubelet.run(pod_id, pod.container_config("app", SLEEP, security=security))
    assert kubelet.exec(cid, "id", "-u").stdout.decode().strip() == "1000"
    denied = kubelet.exec(cid, "touch", "/rootfs-write")
    assert denied.exit_code != 0 and b"Read-only file system" in denied.stderr
    with open(f"/proc/{kubelet.pid(cid)}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    # Only NET_BIND_SERVICE is left to the container (uid 1000 holds none effective at exec).
    assert int(status["CapBnd"], 16) == 1 << 10
    assert int(status["CapEff"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    kubelet.teardown(pod_id)


def test_exec_probe_timeout_expires(node: Node, kubelet: Kubelet) -> None:
    pod = Pod(node)
    pod_id = kubelet.run_pod(pod)
    cid = kubelet.run(pod_id, pod.container_config("app", SLEEP))
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        kubelet.exec(cid, "sleep", "30", timeout=1)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10  # the probe's process was killed, not waited for
    assert kubelet.exec(cid, "true").exit_code == 0  # the container lives on
    kubelet.teardown(pod_id)


def test_update_resources_as_kubelet_sends_them(node: Node, kubelet: Kubelet) -> None:
    """In-place resize sends the full resources again, hugepage limits included."""
    pod = Pod(node, containers=[Limits(100, 500, 32 << 20, 64 << 20)])
    pod_id = kubelet.run_pod(pod)
    config = pod.container_config("app", SLEEP, Limits(100, 500, 32 << 20, 64 << 20))
    cid = kubelet.run(pod_id, config)
    resized = api.LinuxContainerResources()
    resized.CopyFrom(config.linux.resources)
    resized.memory_limit_in_bytes = resized.memory_swap_limit_in_bytes = 96 << 20
    node.daemon.runtime.UpdateContainerResources(
        api.UpdateContainerResourcesRequest(container_id=cid, linux=resized), timeout=30
    )
    assert int(cgroup_file(kubelet.pid(cid), "memory", "memory.limit_in_bytes")) == 96 << 20
    kubelet.teardown(pod_id)


def test_hugepage_limits_refused_when_not_tolerated(node: Node) -> None:
    """[cgroups] tolerate_missing_hugetlb_controller = false: kubelet's hugepage limits are
    INVALID_ARGUMENT on a host without a usable hugetlb controller, at once and by name."""
    node.daemon.extra_config = "[cgroups]\ntolerate_missing_hugetlb_controller = false\n"
    node.daemon.restart()
    kubelet = Kubelet(node)
    pod = Pod(node)
    pod_id = kubelet.run_pod(pod)
    config = pod.container_config("app", SLEEP)
    assert config.linux.resources.hugepage_limits
    if "hugetlb" in HOST.controllers:
        kubelet.run(pod_id, config)
    else:
        with pytest.raises(grpc.RpcError) as e:
            kubelet.create(pod_id, config)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "hugetlb" in (e.value.details() or "")
    status = node.daemon.runtime.Status(api.StatusRequest(verbose=True), timeout=10)
    assert '"tolerateMissingHugetlbController": false' in status.info["cgroups"]
    kubelet.teardown(pod_id)


def test_status_lists_the_hosts_controllers(node: Node) -> None:
    status = node.daemon.runtime.Status(api.StatusRequest(verbose=True), timeout=10)
    cgroups = json.loads(status.info["cgroups"])
    assert set(cgroups["controllers"]) == HOST.controllers
    assert cgroups["hugetlb"] == ("hugetlb" in HOST.controllers)

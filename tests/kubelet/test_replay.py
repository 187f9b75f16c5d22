"""A real kubelet's requests for one pod's whole life, replayed in order against the daemon.

The recording (data/probes-pod.jsonl, README beside it): an init container writing into an
emptyDir, a main container with limits, hugepage limits for every page size (limit 0), exec
probes, liveness restarts, teardown. Every request must answer as it did for kubelet, and the
pod's containers must run, log, restart, stop and go away with nothing left behind.
"""

from __future__ import annotations

import grpc

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.container.daemon_env import read_log
from tests.kubelet.node import Node
from tests.kubelet.replay import Replayer, Step, load

EXITED = api.ContainerState.CONTAINER_EXITED


def test_replay_probes_pod(node: Node) -> None:
    replay = Replayer(node, recorded_image="127.0.0.1:5000/busybox:latest")
    recording = load("probes-pod.jsonl")
    stopped: set[str] = set()
    steps: list[Step] = []
    during: dict[str, list[str]] = {}
    for step in replay.steps(recording):
        steps.append(step)
        where = f"request {step.index} {step.method}: {step.code} {step.details}"
        req = step.request
        if step.foreign:
            # Pods of the kubelet run before this one: kubelet is told they are gone.
            assert step.code == grpc.StatusCode.NOT_FOUND, where
        elif step.method == "ExecSync" and req.container_id in stopped:  # type: ignore[attr-defined]
            # kubelet's probe raced the stop it had just sent; a stopped container cannot exec.
            assert step.code == grpc.StatusCode.FAILED_PRECONDITION, where
        else:
            assert step.code == grpc.StatusCode.OK, where
        if step.method == "StopContainer":
            stopped.add(req.container_id)  # type: ignore[attr-defined]
            status = node.daemon.runtime.ContainerStatus(
                api.ContainerStatusRequest(container_id=req.container_id),  # type: ignore[attr-defined]
                timeout=10,
            ).status
            assert status.state == EXITED and status.finished_at > 0, where
        if step.method == "StartContainer" and not during:
            during = node.leftovers()  # proves the final check sees what a live pod holds
        if step.method == "ExecSync" and step.code == grpc.StatusCode.OK:
            assert step.response.exit_code in (0, 1), where  # type: ignore[union-attr]

    created = [s for s in steps if s.method == "CreateContainer"]
    names = [(s.request.config.metadata.name, s.request.config.metadata.attempt) for s in created]  # type: ignore[attr-defined]
    assert names == [("init", 0), ("main", 0), ("main", 1), ("main", 2), ("main", 3)]
    # Every container ran under the pod's limits, hugepage limits dropped (no usable hugetlb
    # controller on these hosts) rather than failing the start as they did for kubelet before.
    starts = [s for s in steps if s.method == "StartContainer"]
    assert len(starts) == 5 and all(s.code == grpc.StatusCode.OK for s in starts)
    # The init container wrote into the emptyDir; each main container read it and logged it.
    ((_, pod_config),) = replay.pods.items()
    logs = pod_config.log_directory
    for attempt in range(4):
        lines = read_log(f"{logs}/main/{attempt}.log")
        assert ("stdout", "F", "from-init") in lines, (attempt, lines)
    assert "hugepage limits dropped" in node.daemon.logs()
    # Torn down: no pod, no container, no cgroup under kubelet's pod cgroup, nothing on the host.
    rt = node.daemon.runtime
    assert not rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items
    assert not rt.ListContainers(api.ListContainersRequest(), timeout=10).containers
    assert all(during[k] for k in ("veths", "netns_files", "container_cgroups")), during
    assert all(not left for left in node.leftovers().values()), node.leftovers()

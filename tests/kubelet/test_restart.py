"""kubelet's view across a daemon kill -9: while kubelet-shaped pods run with probes firing, the
daemon dies and comes back. kubelet must see the same containers (by its label selectors), the
same exit codes, reasons and times, and no container restarted by the restart itself."""

from __future__ import annotations

import threading
import time

import grpc

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc
from tests.kubelet.kuberuntime import Kubelet, Limits, Pod
from tests.kubelet.node import Node

RUNNING = api.ContainerState.CONTAINER_RUNNING
EXITED = api.ContainerState.CONTAINER_EXITED


class Prober(threading.Thread):
    """kubelet's exec probes: one ExecSync per container, over and over, on a connection of
    its own that, like kubelet's, outlives the daemon and reconnects."""

    def __init__(self, socket: str, cids: list[str]) -> None:
        super().__init__(daemon=True)
        backoff = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]
        self.channel = grpc.insecure_channel(f"unix://{socket}", options=backoff)
        self.runtime = api_grpc.RuntimeServiceStub(self.channel)
        self.cids = cids
        self.stop = threading.Event()
        self.ok = 0
        self.codes: set[grpc.StatusCode] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            for cid in self.cids:
                request = api.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=1)
                try:
                    if self.runtime.ExecSync(request, timeout=10).exit_code == 0:
                        self.ok += 1
                except grpc.RpcError as e:  # the daemon is down: kubelet sees UNAVAILABLE
                    self.codes.add(e.code())
            time.sleep(0.05)
        self.channel.close()


def view(kubelet: Kubelet, pods: list[Pod]) -> dict[str, object]:
    """What kubelet's PLEG and status manager read."""
    rt = kubelet.node.daemon.runtime
    by_pod = {}
    for pod in pods:
        selector = api.ContainerFilter(label_selector={"io.kubernetes.pod.uid": pod.uid})
        containers = rt.ListContainers(api.ListContainersRequest(filter=selector), timeout=10)
        by_pod[pod.uid] = sorted(
            (c.id, c.metadata.name, c.metadata.attempt, c.state, c.created_at)
            for c in containers.containers
        )
    statuses = {}
    for cid, *_ in (c for listed in by_pod.values() for c in listed):
        s = kubelet.status(cid)
        statuses[cid] = (s.state, s.exit_code, s.reason, s.started_at, s.finished_at, s.log_path)
    sandboxes = sorted(
        (p.id, p.state) for p in rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items
    )
    return {"containers": by_pod, "statuses": statuses, "sandboxes": sandboxes}


def test_kill9_keeps_kubelets_view(node: Node, kubelet: Kubelet) -> None:
    burstable = Pod(node, containers=[Limits(100, 500, 32 << 20, 64 << 20)])
    besteffort = Pod(node, qos="besteffort")
    a = kubelet.run_pod(burstable)
    b = kubelet.run_pod(besteffort)
    app = kubelet.run(a, burstable.container_config("app", ["sh", "-c", "exec sleep 1000"]))
    failed = kubelet.run(a, burstable.container_config("init", ["sh", "-c", "exit 3"]))
    other = kubelet.run(b, besteffort.container_config("app", ["sh", "-c", "exec sleep 1000"]))
    deadline = time.monotonic() + 10
    while kubelet.status(failed).state != EXITED and time.monotonic() < deadline:
        time.sleep(0.02)
    # This one exits while the daemon is down; its exit must not be lost.
    late = kubelet.run(b, besteffort.container_config("late", ["sh", "-c", "sleep 1; exit 7"]))
    pids = {cid: kubelet.pid(cid) for cid in (app, other)}
    prober = Prober(node.daemon.socket, [app, other])
    prober.start()
    try:
        time.sleep(0.3)
        before = view(kubelet, [burstable, besteffort])
        node.daemon.kill9()
        time.sleep(1.5)  # `late` exits meanwhile
        node.daemon.start()
        time.sleep(0.3)
        after = view(kubelet, [burstable, besteffort])
        ok_after_restart = prober.ok
        deadline = time.monotonic() + 10
        while prober.ok <= ok_after_restart and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        prober.stop.set()
        prober.join(10)
    assert prober.ok > ok_after_restart, "probes answer again after the restart"
    assert prober.codes <= {grpc.StatusCode.UNAVAILABLE}, prober.codes

    # Same containers for the same selectors; the one that exited while the daemon was down
    # is the only change, and it says how it ended.
    assert after["sandboxes"] == before["sandboxes"]
    statuses_before, statuses_after = before["statuses"], after["statuses"]
    assert isinstance(statuses_before, dict) and isinstance(statuses_after, dict)
    for cid in (app, failed, other):
        assert statuses_after[cid] == statuses_before[cid], cid
    assert statuses_before[failed][:3] == (EXITED, 3, "Error")
    state, code, reason, started_at, finished_at, _ = statuses_after[late]
    assert (state, code, reason) == (EXITED, 7, "Error")
    assert started_at < finished_at <= time.time_ns()
    listed_before, listed_after = before["containers"], after["containers"]
    assert isinstance(listed_before, dict) and isinstance(listed_after, dict)
    assert {u: [c[:3] for c in cs] for u, cs in listed_after.items()} == {
        u: [c[:3] for c in cs] for u, cs in listed_before.items()
    }
    # Nothing was restarted by the restart: same processes, still running.
    assert {cid: kubelet.pid(cid) for cid in (app, other)} == pids
    assert kubelet.status(app).state == kubelet.status(other).state == RUNNING
    kubelet.teardown(a)
    kubelet.teardown(b)
    assert all(not left for left in node.leftovers().values()), node.leftovers()

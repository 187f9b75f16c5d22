"""Stats under kubelet's polling: ListContainerStats / ListPodSandboxStats latency with 100
running containers in 50 pods, and the CPU a runtime spends over 60 s of kubelet-like polling,
criruntime vs containerd 1.6 + runc, both started by bench/harness.py in the same run.

Each runtime runs PODS host-network pods of CONTAINERS_PER_POD busybox `sleep` containers
(CNI stays out of the figures, as in bench/container.py).

Latency: RUNS calls of each list per runtime, taking turns call by call (medians; target
criruntime <= 1.0x containerd).

CPU: kubelet's steady polling, in rounds of 10 s: ListPodSandbox + ListContainers every second;
ListContainerStats, ListPodSandboxStats and one ContainerStatus per container once per round.
The runtimes take turns round by round, ROUNDS rounds each (60 s), so a machine that slows down
mid-run weighs on both. CPU is utime + stime from /proc/<pid>/stat of the daemon, and of the
daemon plus its per-container monitors (containerd's shims answer its stats calls; conmon
takes no part in ours), over each runtime's own rounds only. Target: criruntime <= 1.0x.
The daemons' RSS at the end of the run is reported too.

    .venv/bin/python -m bench stats
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from bench.container import _container, _pod, _remove_pods, _run_pod, monitor_pids, rss_kb
from bench.harness import RuntimeUnderTest, Setup, Timing, containerd, criruntime, report
from bench.sandbox import PAUSE_IMAGE, import_pause_image
from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.cgroupfs import Cgroupfs
from tests.container.daemon_env import busybox_image
from tests.image import images
from tests.image.registry_env import start_registry

PODS = 50
CONTAINERS_PER_POD = 2
RUNS = 30
WARMUP = 3
ROUND = 10.0  # seconds: kubelet's stats period
ROUNDS = 6  # per runtime: 60 s of polling each
_TICK = os.sysconf("SC_CLK_TCK")
CGROUP_ROOT = f"/bench-kubepods-{os.getpid()}"
HOST_CGROUPS = Cgroupfs.detect()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def populate(
    rt: RuntimeUnderTest, image: str, logs: str, pod_ids: list[str], cgroups: list[str]
) -> None:
    """PODS pods as kubelet runs them, each in a pod cgroup made beforehand (containerd reads
    pod stats from there and fails without one); both lists collect what to remove."""
    for p in range(PODS):
        config = _pod(logs, api.NamespaceMode.CONTAINER)
        cgroup = f"{CGROUP_ROOT}/pod{config.metadata.uid}"
        HOST_CGROUPS.create(cgroup)
        cgroups.append(cgroup)
        config.linux.cgroup_parent = cgroup
        pod = _run_pod(rt, config)
        pod_ids.append(pod)
        for c in range(CONTAINERS_PER_POD):
            container = _container(image, p * CONTAINERS_PER_POD + c)
            container.command[:] = ["sleep", "100000"]
            cid = rt.runtime.CreateContainer(
                api.CreateContainerRequest(
                    pod_sandbox_id=pod, config=container, sandbox_config=config
                ),
                timeout=60,
            ).container_id
            rt.runtime.StartContainer(api.StartContainerRequest(container_id=cid), timeout=60)


def list_latencies(runtimes: list[RuntimeUnderTest]) -> dict[str, dict[str, Timing]]:
    def containers(rt: RuntimeUnderTest) -> int:
        return len(rt.runtime.ListContainerStats(api.ListContainerStatsRequest(), timeout=60).stats)

    def pods(rt: RuntimeUnderTest) -> int:
        return len(
            rt.runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest(), timeout=60).stats
        )

    calls = {
        "ListContainerStats": (containers, PODS * CONTAINERS_PER_POD),
        "ListPodSandboxStats": (pods, PODS),
    }
    samples: dict[str, dict[str, list[float]]] = {rt.name: {} for rt in runtimes}
    for i in range(WARMUP + RUNS):
        order = runtimes if i % 2 == 0 else runtimes[::-1]
        for name, (call, expected) in calls.items():
            for rt in order:
                time.sleep(0.05)
                started = time.perf_counter()
                found = call(rt)
                elapsed = time.perf_counter() - started
                assert found == expected, (rt.name, name, found)
                if i >= WARMUP:
                    samples[rt.name].setdefault(name, []).append(elapsed)
    return {n: {k: Timing(v) for k, v in per.items()} for n, per in samples.items()}


def kubelet_round(rt: RuntimeUnderTest) -> None:
    """ROUND seconds of what kubelet asks a runtime for a node of this size."""
    r = rt.runtime
    started = time.monotonic()
    r.ListContainerStats(api.ListContainerStatsRequest(), timeout=60)
    r.ListPodSandboxStats(api.ListPodSandboxStatsRequest(), timeout=60)
    for second in range(int(ROUND)):
        r.ListPodSandbox(api.ListPodSandboxRequest(), timeout=60)
        listed = r.ListContainers(api.ListContainersRequest(), timeout=60).containers
        if second == 0:
            for c in listed:
                r.ContainerStatus(api.ContainerStatusRequest(container_id=c.id), timeout=60)
        pause = started + second + 1 - time.monotonic()
        if pause > 0:
            time.sleep(pause)


@dataclass
class Cpu:
    daemon: float = 0.0
    monitors: float = 0.0

    @property
    def total(self) -> float:
        return self.daemon + self.monitors


def polling_cpu(runtimes: list[RuntimeUnderTest]) -> dict[str, Cpu]:
    spent = {rt.name: Cpu() for rt in runtimes}
    monitors = {rt.name: sorted(monitor_pids(rt)) for rt in runtimes}
    for i in range(ROUNDS):
        for rt in runtimes if i % 2 == 0 else runtimes[::-1]:
            daemon0 = cpu_seconds(rt.pid)
            mon0 = sum(cpu_seconds(p) for p in monitors[rt.name])
            kubelet_round(rt)
            spent[rt.name].daemon += cpu_seconds(rt.pid) - daemon0
            spent[rt.name].monitors += sum(cpu_seconds(p) for p in monitors[rt.name]) - mon0
    return spent


def _cpu_report(cpu: dict[str, Cpu], rss: dict[str, int]) -> str:
    ours, theirs = cpu["criruntime"], cpu["containerd"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:>6.2f}x" if b else "     -"

    lines = [
        f"## CPU seconds over {ROUNDS * ROUND:.0f} s of kubelet-like polling each "
        f"({PODS * CONTAINERS_PER_POD} containers, {PODS} pods; rounds taken in turns)",
        f"{'':<30} {'criruntime':>10} {'containerd':>10} {'ratio':>7}",
        f"{'daemon':<30} {ours.daemon:>10.2f} {theirs.daemon:>10.2f} "
        f"{ratio(ours.daemon, theirs.daemon)}",
        f"{'monitors (conmon / shims)':<30} {ours.monitors:>10.2f} {theirs.monitors:>10.2f} "
        f"{ratio(ours.monitors, theirs.monitors)}",
        f"{'TOTAL':<30} {ours.total:>10.2f} {theirs.total:>10.2f} "
        f"{ratio(ours.total, theirs.total)}",
        f"{'daemon RSS at the end, MB':<30} {rss['criruntime'] / 1024:>10.1f} "
        f"{rss['containerd'] / 1024:>10.1f} {ratio(rss['criruntime'], rss['containerd'])}",
        "(target: TOTAL ratio <= 1.00x)",
    ]
    return "\n".join(lines)


def run() -> str:
    work = tempfile.mkdtemp(prefix="bench-stats-", dir="/tmp")
    logs = os.path.join(work, "logs")
    conf_dir, bin_dir = os.path.join(work, "net.d"), os.path.join(work, "bin")
    for d in (logs, conf_dir, bin_dir):
        os.makedirs(d)
    registry = start_registry(work, os.path.join(work, "storage"), "bench")
    try:
        images.push(registry.url, "bench/busybox", busybox_image(["sh"]), ["1"])
        image = f"{registry.host}/bench/busybox:1"
        setup = Setup(
            cni_conf_dir=conf_dir,
            cni_bin_dirs=[bin_dir],
            registry=registry.host,
            sandbox_image=PAUSE_IMAGE,
        )
        with containerd(setup) as theirs, criruntime(setup) as ours:
            import_pause_image(theirs, work)
            runtimes = [theirs, ours]
            pods: dict[str, list[str]] = {}
            cgroups: list[str] = []
            try:
                for rt in runtimes:
                    rt.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=image)))
                    pods[rt.name] = []
                    populate(rt, image, logs, pods[rt.name], cgroups)
                time.sleep(2.0)  # let the start-up burst settle
                lat = list_latencies(runtimes)
                cpu = polling_cpu(runtimes)
                rss = {rt.name: rss_kb(rt.pid) for rt in runtimes}
            finally:
                for rt in runtimes:
                    if rt.name in pods:
                        _remove_pods(rt, pods[rt.name])
                for cgroup in cgroups:
                    HOST_CGROUPS.remove(cgroup, owned_from=CGROUP_ROOT)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    table = report(
        f"stats lists, {PODS * CONTAINERS_PER_POD} running containers in {PODS} pods, "
        f"{RUNS} calls each (after {WARMUP} warm-up), in turns",
        [
            (name, lat["criruntime"][name], lat["containerd"][name])
            for name in ("ListContainerStats", "ListPodSandboxStats")
        ],
        target=1.0,
    )
    return table + "\n\n" + _cpu_report(cpu, rss)


if __name__ == "__main__":
    print(run())

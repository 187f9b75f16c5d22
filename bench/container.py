"""Containers: create, start, ExecSync, stop and rm latency, and memory with N running pods,
criruntime vs containerd 1.6 + runc, both started by bench/harness.py in the same run.

Both pull one busybox-static image (built here, as the tests build it) from a docker-registry on
127.0.0.1; containerd also gets the catatonit pause image the sandbox benchmark builds. Pods are
host-network pods, so CNI is not part of the figures.

Latency: one pod per contestant, RUNS containers each run through create → start → ExecSync →
stop → rm, each verb timed on its own (medians). criruntime takes part twice, with a pod on its
crun handler (targets: start and ExecSync <= 0.5x containerd) and one on its runc handler. Both
daemons are up at once and all contestants take turns cycle by cycle, so drift in the machine's
speed during the run (common on a shared VM) does not land on one only. crun and runc alone on
a copy of criruntime's bundle (RuntimeAlone) join the rotation: the floor under start and
ExecSync for any runtime that drives them, reported against containerd's figures.

Memory: VmRSS from /proc/<pid>/status of the daemon idle (image pulled, no pods), then with PODS
pods running one container each: the daemon plus its per-container monitors, found by PID and
never signalled: conmon from each bundle's conmon.pid for criruntime, containerd-shim-runc-v2
by its `-address <containerd socket>` argument for containerd. Zombies are not counted.
Target: criruntime's total <= 0.5x containerd's.

    .venv/bin/python -m bench container
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bench.harness import RuntimeUnderTest, Setup, Timing, containerd, criruntime, report
from bench.sandbox import PAUSE_IMAGE, import_pause_image
from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.oci import mountns
from tests.container.daemon_env import busybox_image
from tests.image import images
from tests.image.registry_env import start_registry

T = TypeVar("T")

RUNS = 30
WARMUP = 2
PODS = 50
SETTLE = 2.0  # seconds for RSS to settle after a burst of work
# A pause before each contestant's cycle and before each ExecSync. The background work one
# contestant leaves (containerd's GC removes the snapshot right after RemoveContainer returns,
# criruntime deletes dirs in a thread) must not land in the next one's timings. And an exec on
# the heels of a start meets a busy, warm machine: measured here, criruntime's ExecSync took
# ~24 ms back-to-back but ~36 ms after 100 ms idle, which is what a probe-like exec meets.
QUIET = 0.25
VERBS = ("create", "start", "exec", "stop", "rm")


@dataclass
class Memory:
    idle_daemon_kb: int
    daemon_kb: int
    monitors_kb: list[int]
    pod_processes_kb: int  # containerd's pause / criruntime's pod init, for information

    @property
    def total_kb(self) -> int:
        return self.daemon_kb + sum(self.monitors_kb)


def rss_kb(pid: int) -> int:
    """VmRSS of a live process in kB; 0 for a zombie or a vanished one."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return 0
    if fields.get("State", "").strip().startswith("Z"):
        return 0
    return int(fields.get("VmRSS", "0 kB").split()[0])


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _state_dir(rt: RuntimeUnderTest) -> str:
    return os.path.join(os.path.dirname(rt.socket), "state")


def _shim_pids(socket: str) -> set[int]:
    """containerd-shim-runc-v2 processes serving the containerd on `socket`: they re-parent to
    PID 1, so they are found by their `-address <socket>` argument (and never signalled)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if os.path.basename(args[0]) != "containerd-shim-runc-v2" or "-address" not in args:
            continue
        if args[args.index("-address") + 1] == socket:
            found.add(int(entry))
    return found


def monitor_pids(rt: RuntimeUnderTest) -> set[int]:
    if rt.name == "criruntime":
        bundles = os.path.join(_state_dir(rt), "containers")
        pids = {_read_pid(os.path.join(bundles, c, "conmon.pid")) for c in os.listdir(bundles)}
    else:
        pids = _shim_pids(rt.socket)
    return {p for p in pids if p > 0 and rss_kb(p) > 0}


def pod_process_pids(rt: RuntimeUnderTest, pod_ids: list[str]) -> set[int]:
    """containerd's pause processes, criruntime's pod init if any: the verbose status's pid."""
    pids = set()
    for pod in pod_ids:
        info = rt.runtime.PodSandboxStatus(
            api.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)
        ).info
        pid = int(json.loads(info.get("info", "{}")).get("pid") or 0)
        if pid > 0:
            pids.add(pid)
    return pids


def _pod(logs: str, pid_mode: api.NamespaceMode.ValueType) -> api.PodSandboxConfig:
    name = f"bench-{secrets.token_hex(4)}"
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="bench", uid=secrets.token_hex(8)),
        hostname="",  # host network: the host UTS namespace
        log_directory=os.path.join(logs, name),
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NamespaceMode.NODE, pid=pid_mode)
            )
        ),
    )


def _container(image: str, i: int) -> api.ContainerConfig:
    return api.ContainerConfig(
        metadata=api.ContainerMetadata(name=f"c{i}"),
        image=api.ImageSpec(image=image),
        command=["sleep", "1000"],
        log_path=f"c{i}.log",
    )


def _run_pod(rt: RuntimeUnderTest, config: api.PodSandboxConfig, handler: str = "") -> str:
    request = api.RunPodSandboxRequest(config=config, runtime_handler=handler)
    return str(rt.runtime.RunPodSandbox(request, timeout=60).pod_sandbox_id)


def _remove_pods(rt: RuntimeUnderTest, pod_ids: list[str]) -> None:
    # Containers first, with no grace (kubelet does this before StopPodSandbox): `sleep` as
    # PID 1 ignores SIGTERM, and criruntime's StopPodSandbox would give each one 10 s.
    listed = rt.runtime.ListContainers(api.ListContainersRequest(), timeout=60).containers
    for c in listed:
        if c.pod_sandbox_id in pod_ids:
            rt.runtime.StopContainer(api.StopContainerRequest(container_id=c.id), timeout=60)
    for pod in pod_ids:
        rt.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)
        rt.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _cycle(
    rt: RuntimeUnderTest, pod: str, config: api.PodSandboxConfig, image: str, i: int
) -> dict[str, float]:
    """One container through create → start → ExecSync → stop → rm; each verb's seconds.
    ExecSync comes QUIET seconds after the start, as a probe would, not on its heels."""
    r = rt.runtime
    request = api.CreateContainerRequest(
        pod_sandbox_id=pod, config=_container(image, i), sandbox_config=config
    )
    laps: dict[str, float] = {}
    laps["create"], created = _timed(lambda: r.CreateContainer(request))
    cid = created.container_id
    laps["start"], _ = _timed(lambda: r.StartContainer(api.StartContainerRequest(container_id=cid)))
    time.sleep(QUIET)
    laps["exec"], out = _timed(
        lambda: r.ExecSync(api.ExecSyncRequest(container_id=cid, cmd=["echo", "hi"], timeout=10))
    )
    assert out.stdout == b"hi\n", out
    stop = api.StopContainerRequest(container_id=cid, timeout=10)
    laps["stop"], _ = _timed(lambda: r.StopContainer(stop))
    laps["rm"], _ = _timed(lambda: r.RemoveContainer(api.RemoveContainerRequest(container_id=cid)))
    return laps


class RuntimeAlone:
    """An OCI runtime by itself, no daemon and no conmon, on copies of criruntime's own bundle
    for this pod (same spec, same rootfs, same pod namespaces): the floor under StartContainer
    (`create` + `start`) and ExecSync (`exec`) that no CRI runtime driving it can go below. It
    takes its turn in the same rotation as the daemons. crun runs in a private mount namespace
    made as criruntime makes its own (criruntime/oci/mountns.py), entered with nsenter as
    criruntime enters it, so its figures include nsenter's exec (~0.5 ms)."""

    def __init__(
        self, binary: str, rt: RuntimeUnderTest, pod: str, config: api.PodSandboxConfig, image: str
    ):
        self.name = f"{binary} alone"
        self.binary = binary
        self.ours = rt
        self.root = tempfile.mkdtemp(prefix=f"bench-{binary}-", dir="/tmp")
        # A created, never started container lends its spec and its mounted rootfs.
        self.template_id = rt.runtime.CreateContainer(
            api.CreateContainerRequest(
                pod_sandbox_id=pod, config=_container(image, 999), sandbox_config=config
            )
        ).container_id
        bundle = os.path.join(_state_dir(rt), "containers", self.template_id)
        with open(os.path.join(bundle, "config.json")) as f:
            self.spec = json.load(f)
        self.namespace: mountns.PrivateMountNamespace | None = None
        hidden = mountns.hidden_mounts(mountns.read_mounts())
        if binary == "crun" and hidden:
            # Made after the template's rootfs was mounted, so it holds a copy of it.
            self.namespace = mountns.PrivateMountNamespace.prepare(hidden, self.root)
        enter = self.namespace.enter if self.namespace is not None else []
        self.cmd = [*enter, binary, "--root", os.path.join(self.root, "state")]

    def cycle(self, i: int) -> dict[str, float]:
        cid = f"floor-{i}"
        bundle = os.path.join(self.root, cid)
        os.makedirs(bundle)
        spec = json.loads(json.dumps(self.spec))
        parent = spec["linux"]["cgroupsPath"].rsplit("/", 1)[0]
        spec["linux"]["cgroupsPath"] = f"{parent}/{cid}"  # under the pod's cgroup, like ours
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        process = dict(spec["process"], args=["echo", "hi"])
        with open(os.path.join(bundle, "process.json"), "w") as f:
            json.dump(process, f)
        try:
            t0 = time.perf_counter()
            # stdout to /dev/null: the created init holds it until the container ends.
            subprocess.run(
                [*self.cmd, "create", "--bundle", bundle, cid],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                check=True,
            )
            created = time.perf_counter()
            subprocess.run([*self.cmd, "start", cid], check=True)
            t1 = time.perf_counter()
            time.sleep(QUIET)  # as for the daemons' ExecSync
            t1_exec = time.perf_counter()
            out = subprocess.run(
                [*self.cmd, "exec", "--process", os.path.join(bundle, "process.json"), cid],
                capture_output=True,
                check=True,
            ).stdout
            t2 = time.perf_counter()
            assert out == b"hi\n", out
        finally:
            subprocess.run([*self.cmd, "delete", "--force", cid], capture_output=True)
            shutil.rmtree(bundle, ignore_errors=True)
        return {"create": created - t0, "start": t1 - t0, "exec": t2 - t1_exec}

    def close(self) -> None:
        self.ours.runtime.RemoveContainer(api.RemoveContainerRequest(container_id=self.template_id))
        if self.namespace is not None:
            self.namespace.close()
        shutil.rmtree(self.root, ignore_errors=True)


# criruntime takes part once per runtime handler: one daemon, a pod on each.
HANDLERS = ("crun", "runc")


def latencies(
    theirs: RuntimeUnderTest, ours: RuntimeUnderTest, image: str, logs: str
) -> dict[str, dict[str, Timing]]:
    """Per contestant (containerd; criruntime on crun and on runc; crun and runc alone), per
    verb. They take turns cycle by cycle, each cycle in a new order, so a machine that speeds
    up or slows down during the run (common on a shared VM) weighs on all of them alike."""
    # A shared pod PID namespace, so `sleep` is not PID 1 and SIGTERM stops it at once.
    pods: dict[str, tuple[RuntimeUnderTest, str, api.PodSandboxConfig]] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    floors: list[RuntimeAlone] = []
    try:
        for name, rt, handler in [
            ("containerd", theirs, ""),
            *((f"criruntime {h}", ours, h) for h in HANDLERS),
        ]:
            config = _pod(logs, api.NamespaceMode.POD)
            pods[name] = (rt, _run_pod(rt, config, handler), config)
        for handler in HANDLERS:
            _, pod, config = pods[f"criruntime {handler}"]
            floors.append(RuntimeAlone(handler, ours, pod, config, image))
        contestants: list[tuple[str, Callable[[int], dict[str, float]]]] = [
            (name, functools.partial(_cycle, rt, pod, config, image))
            for name, (rt, pod, config) in pods.items()
        ] + [(floor.name, floor.cycle) for floor in floors]
        for i in range(WARMUP + RUNS):
            shift = i % len(contestants)
            for name, cycle in contestants[shift:] + contestants[:shift]:
                time.sleep(QUIET)
                laps = cycle(i)
                if i >= WARMUP:
                    for verb, seconds in laps.items():
                        samples.setdefault(name, {}).setdefault(verb, []).append(seconds)
    finally:
        for floor in floors:
            floor.close()
        for rt, pod, _ in pods.values():
            _remove_pods(rt, [pod])
    return {name: {v: Timing(s) for v, s in per.items() if s} for name, per in samples.items()}


def memory(rt: RuntimeUnderTest, image: str, logs: str, pods: int) -> Memory:
    time.sleep(SETTLE)
    idle = rss_kb(rt.pid)
    pod_ids: list[str] = []
    try:
        for i in range(pods):
            config = _pod(logs, api.NamespaceMode.CONTAINER)  # kubelet's default
            pod = _run_pod(rt, config)
            pod_ids.append(pod)
            cid = rt.runtime.CreateContainer(
                api.CreateContainerRequest(
                    pod_sandbox_id=pod, config=_container(image, i), sandbox_config=config
                ),
                timeout=60,
            ).container_id
            rt.runtime.StartContainer(api.StartContainerRequest(container_id=cid), timeout=60)
        time.sleep(SETTLE)
        running = rt.runtime.ListContainers(
            api.ListContainersRequest(
                filter=api.ContainerFilter(
                    state=api.ContainerStateValue(state=api.ContainerState.CONTAINER_RUNNING)
                )
            )
        ).containers
        assert len(running) == pods, f"{rt.name}: {len(running)} of {pods} containers running"
        monitors = sorted(rss_kb(p) for p in monitor_pids(rt))
        pod_kb = sum(rss_kb(p) for p in pod_process_pids(rt, pod_ids))
        return Memory(idle, rss_kb(rt.pid), monitors, pod_kb)
    finally:
        _remove_pods(rt, pod_ids)


def _memory_report(ours: Memory, theirs: Memory, pods: int) -> str:
    def mb(kb: float) -> str:
        return f"{kb / 1024:>10.1f}"

    def per(m: Memory) -> float:
        return sum(m.monitors_kb) / max(len(m.monitors_kb), 1)

    rows = [
        ("daemon RSS idle", ours.idle_daemon_kb, theirs.idle_daemon_kb),
        (f"daemon RSS, {pods} pods", ours.daemon_kb, theirs.daemon_kb),
        ("monitors RSS total", sum(ours.monitors_kb), sum(theirs.monitors_kb)),
        ("per-monitor RSS (mean)", per(ours), per(theirs)),
        ("TOTAL daemon + monitors", ours.total_kb, theirs.total_kb),
        ("(pod processes, not counted)", ours.pod_processes_kb, theirs.pod_processes_kb),
    ]
    lines = [
        f"## memory, {pods} running pods x 1 container (VmRSS, MB); monitors: "
        f"{len(ours.monitors_kb)} conmon vs {len(theirs.monitors_kb)} containerd-shim-runc-v2",
        f"{'':<30} {'criruntime':>10} {'containerd':>10} {'ratio':>7}",
    ]
    for label, a, b in rows:
        ratio = f"{a / b:>6.2f}x" if b else "     -"
        lines.append(f"{label:<30} {mb(a)} {mb(b)} {ratio}")
    lines.append("(target: TOTAL ratio <= 0.50x)")
    return "\n".join(lines)


def run() -> str:
    work = tempfile.mkdtemp(prefix="bench-ctr-", dir="/tmp")
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
        # Both daemons run side by side, so the latency cycles can take turns.
        with containerd(setup) as theirs, criruntime(setup) as ours:
            import_pause_image(theirs, work)
            for rt in (theirs, ours):
                rt.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=image)))
            lat = latencies(theirs, ours, image, logs)
            c_mem = memory(theirs, image, logs, PODS)
            r_mem = memory(ours, image, logs, PODS)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    tables = [
        report(
            f"containers on criruntime's {handler} handler vs containerd (runc), {RUNS} each "
            f"(after {WARMUP} warm-up), busybox image, host-network pod",
            [(verb, lat[f"criruntime {handler}"][verb], lat["containerd"][verb]) for verb in VERBS],
            target=0.5 if handler == "crun" else 0.7,
        )
        for handler in HANDLERS
    ]
    floor = report(
        "the floor: each runtime alone on a copy of criruntime's bundle, in the same rotation",
        [
            (f"{rt} {row}", lat[f"{rt} alone"][verb], lat["containerd"][their])
            for rt in HANDLERS
            for row, verb, their in (
                ("create vs start", "create", "start"),
                ("create+start vs start", "start", "start"),
                ("exec vs exec", "exec", "exec"),
            )
        ],
        ours="alone",
    )
    return "\n\n".join([*tables, floor, _memory_report(r_mem, c_mem, PODS)])


if __name__ == "__main__":
    print(run())

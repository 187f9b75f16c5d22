"""Streaming: exec round trip and throughput, port-forward throughput and 100 concurrent
connections, criruntime vs containerd 1.6, both started by bench/harness.py in the same run.

The client is the tests' own SPDY client (tests/streaming/clients.py), in this process, for both
runtimes alike, so the figures are the runtimes' streaming paths and not a client's start-up:

- exec round trip: Exec RPC, SPDY upgrade, streams, a non-tty `echo hi`, the status. That is
  what `crictl exec` and `kubectl exec` do (the streaming path, not ExecSync). Median of RUNS,
  the runtimes taking turns. Target <= 0.7x containerd.
- exec stdout throughput: `head -c 256M /dev/zero` through the stdout stream, MB/s (busybox
  head writes in small pieces and bounds both runtimes; `dd bs=1M` shows the streaming path).
- port-forward throughput: 256 MB from busybox httpd through one forwarded connection, MB/s.
  Target for both: >= 1.0x containerd's MB/s.
- 100 concurrent port-forward connections in one session, each fetching a small page: all must
  succeed; the wall time is reported.

Pods are host-network pods, so CNI is not part of the figures.

    .venv/bin/python -m bench streaming
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from bench.harness import RuntimeUnderTest, Setup, Timing, containerd, criruntime, report
from bench.sandbox import PAUSE_IMAGE, import_pause_image
from criruntime.api.runtime.v1 import api_pb2 as api
from tests.container.daemon_env import busybox_layer
from tests.image import images
from tests.image.layers import symlink
from tests.image.registry_env import start_registry
from tests.streaming.clients import SpdyClient

RUNS = 30
WARMUP = 3
THROUGHPUT_RUNS = 3
BIG = 256 * 1024 * 1024
CONNECTIONS = 100
QUIET = 0.1


def _image() -> images.Image:
    layer = busybox_layer() + [symlink(f"bin/{a}", "busybox") for a in ("httpd", "mkdir", "dd")]
    return images.build(
        [(layer, "gzip")], extra_config={"Cmd": ["sh"], "Env": ["PATH=/bin"], "Volumes": None}
    )


def _pod(logs: str) -> api.PodSandboxConfig:
    name = f"bench-{secrets.token_hex(4)}"
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="bench", uid=secrets.token_hex(8)),
        log_directory=os.path.join(logs, name),
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(
                    network=api.NamespaceMode.NODE, pid=api.NamespaceMode.POD
                )
            )
        ),
    )


class Target:
    """One runtime's pod with a sleeping container and an httpd on a host port."""

    def __init__(self, rt: RuntimeUnderTest, image: str, logs: str) -> None:
        self.rt = rt
        self.config = _pod(logs)
        r = rt.runtime
        self.pod = r.RunPodSandbox(api.RunPodSandboxRequest(config=self.config), timeout=60)
        self.pod = self.pod.pod_sandbox_id
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        script = (
            f"mkdir -p /www && echo page > /www/index.html && "
            f"head -c {BIG} /dev/zero > /www/big && exec httpd -f -p 127.0.0.1:{self.port} -h /www"
        )
        self.sleeper = self._run(image, "sleeper", ["sleep", "100000"])
        self.web = self._run(image, "web", ["sh", "-c", script])
        deadline = time.monotonic() + 60
        while True:  # the big file is written before httpd listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{rt.name}: httpd did not come up")
            time.sleep(0.1)

    def _run(self, image: str, name: str, command: list[str]) -> str:
        r = self.rt.runtime
        cid = r.CreateContainer(
            api.CreateContainerRequest(
                pod_sandbox_id=self.pod,
                config=api.ContainerConfig(
                    metadata=api.ContainerMetadata(name=name),
                    image=api.ImageSpec(image=image),
                    command=command,
                    log_path=f"{name}.log",
                ),
                sandbox_config=self.config,
            ),
            timeout=60,
        ).container_id
        r.StartContainer(api.StartContainerRequest(container_id=cid), timeout=60)
        return str(cid)

    def exec_url(self, cmd: list[str]) -> str:
        request = api.ExecRequest(container_id=self.sleeper, cmd=cmd, stdout=True, stderr=True)
        return str(self.rt.runtime.Exec(request, timeout=10).url)

    def portforward_url(self) -> str:
        request = api.PortForwardRequest(pod_sandbox_id=self.pod, port=[self.port])
        return str(self.rt.runtime.PortForward(request, timeout=10).url)

    def close(self) -> None:
        r = self.rt.runtime
        for cid in (self.sleeper, self.web):
            r.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
        r.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=self.pod), timeout=120)
        r.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=self.pod), timeout=120)


async def _exec(target: Target, cmd: list[str], keep: bool = True) -> tuple[int, bytes]:
    client, _ = await SpdyClient.connect(target.exec_url(cmd), ["v4.channel.k8s.io"])
    try:
        error = await client.open({"streamtype": "error"})
        out = await client.open({"streamtype": "stdout"}, keep=keep)
        err = await client.open({"streamtype": "stderr"})
        await error.wait_fin(120)
        await out.wait_fin(120)
        await err.wait_fin(120)
        assert b"Failure" not in error.data, bytes(error.data)
        return out.received, bytes(out.data)
    finally:
        await client.close()


async def _forward(target: Target, request: bytes, n: int, keep: bool = True) -> list[int]:
    client, _ = await SpdyClient.connect(target.portforward_url(), ["portforward.k8s.io"])
    try:

        async def one(i: int) -> int:
            port = str(target.port)
            error = await client.open({"streamtype": "error", "port": port, "requestid": str(i)})
            data = await client.open(
                {"streamtype": "data", "port": port, "requestid": str(i)}, keep=keep
            )
            await client.send(data, request)
            await data.wait_fin(120)
            assert not error.data, bytes(error.data)
            return data.received

        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()


Measure = Callable[[], Coroutine[Any, Any, float]]


def _rotate(
    targets: list[Target],
    runs: int,
    warmup: int,
    fn: Callable[[Target], Coroutine[Any, Any, float]],
    extra: Mapping[str, Measure] | None = None,
) -> dict[str, list[float]]:
    """Runs fn on each target (and each extra contestant) in turn, the order shifting each
    round, so a machine that speeds up or slows down weighs on all alike; returns samples."""
    contestants: list[tuple[str, Measure]] = [
        (t.rt.name, functools.partial(fn, t)) for t in targets
    ]
    contestants += list((extra or {}).items())
    samples: dict[str, list[float]] = {name: [] for name, _ in contestants}
    for i in range(warmup + runs):
        shift = i % len(contestants)
        for name, measure in contestants[shift:] + contestants[:shift]:
            time.sleep(QUIET)
            value = asyncio.run(measure())
            if i >= warmup:
                samples[name].append(value)
    return samples


def _floor_argv(target: Target) -> tuple[str, list[str]]:
    """`<runtime> exec <container>` by itself on criruntime's container, with the runtime that
    runs it (crun on the default handler here, entered into its mount namespace through the
    container's conmon, as the daemon enters it): the floor under criruntime's exec."""
    state = os.path.join(os.path.dirname(target.rt.socket), "state")
    handler = next(
        h for h in ("crun", "runc") if os.path.isdir(os.path.join(state, "oci", h, target.sleeper))
    )
    argv = [handler, "--root", os.path.join(state, "oci", handler), "exec", target.sleeper]
    if handler == "crun":
        with open(os.path.join(state, "containers", target.sleeper, "conmon.pid")) as f:
            argv = ["nsenter", f"--mount=/proc/{int(f.read())}/ns/mnt", *argv]
    return handler, argv


async def _runtime_floor(argv: list[str]) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, "echo", "hi", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    elapsed = time.perf_counter() - started
    assert out == b"hi\n", out
    return elapsed


async def _round_trip(target: Target) -> float:
    started = time.perf_counter()
    _, out = await _exec(target, ["echo", "hi"])
    elapsed = time.perf_counter() - started
    assert out == b"hi\n", out
    return elapsed


async def _exec_throughput(target: Target, cmd: list[str]) -> float:
    started = time.perf_counter()
    got, _ = await _exec(target, cmd, keep=False)
    elapsed = time.perf_counter() - started
    assert got == BIG, got
    return BIG / elapsed / 1e6


async def _forward_throughput(target: Target) -> float:
    started = time.perf_counter()
    (got,) = await _forward(target, b"GET /big HTTP/1.0\r\n\r\n", 1, keep=False)
    elapsed = time.perf_counter() - started
    assert got > BIG, got  # the file and HTTP headers
    return BIG / elapsed / 1e6


async def _concurrent(target: Target) -> float:
    started = time.perf_counter()
    sizes = await _forward(target, b"GET / HTTP/1.0\r\n\r\n", CONNECTIONS)
    elapsed = time.perf_counter() - started
    assert len(sizes) == CONNECTIONS and all(s > 0 for s in sizes), sizes
    return elapsed


def _rate_row(name: str, ours: list[float], theirs: list[float]) -> str:
    mine, other = Timing(ours).median, Timing(theirs).median
    return f"{name:<34} {mine:>12.0f} {other:>14.0f} {mine / other:>6.2f}x"


def run() -> str:
    work = tempfile.mkdtemp(prefix="bench-str-", dir="/tmp")
    logs = os.path.join(work, "logs")
    conf_dir, bin_dir = os.path.join(work, "net.d"), os.path.join(work, "bin")
    for d in (logs, conf_dir, bin_dir):
        os.makedirs(d)
    registry = start_registry(work, os.path.join(work, "storage"), "bench")
    try:
        images.push(registry.url, "bench/sbusybox", _image(), ["1"])
        image = f"{registry.host}/bench/sbusybox:1"
        setup = Setup(
            cni_conf_dir=conf_dir,
            cni_bin_dirs=[bin_dir],
            registry=registry.host,
            sandbox_image=PAUSE_IMAGE,
        )
        with containerd(setup) as theirs, criruntime(setup) as ours:
            import_pause_image(theirs, work)
            for rt in (theirs, ours):
                rt.image.PullImage(api.PullImageRequest(image=api.ImageSpec(image=image)))
            targets = [Target(theirs, image, logs), Target(ours, image, logs)]
            try:
                handler, argv = _floor_argv(targets[1])
                floor = {"runtime alone": functools.partial(_runtime_floor, argv)}
                trip = _rotate(targets, RUNS, WARMUP, _round_trip, floor)
                head = ["head", "-c", str(BIG), "/dev/zero"]
                exec_rate = _rotate(
                    targets, THROUGHPUT_RUNS, 1, functools.partial(_exec_throughput, cmd=head)
                )
                dd = ["dd", "if=/dev/zero", f"bs={1 << 20}", f"count={BIG >> 20}"]
                dd_rate = _rotate(
                    targets, THROUGHPUT_RUNS, 1, functools.partial(_exec_throughput, cmd=dd)
                )
                forward_rate = _rotate(targets, THROUGHPUT_RUNS, 1, _forward_throughput)
                many = _rotate(targets, THROUGHPUT_RUNS, 1, _concurrent)
            finally:
                for target in targets:
                    target.close()
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    latency = report(
        f"streaming latency, {RUNS} runs each (after {WARMUP} warm-up), host-network pod",
        [
            ("exec round trip (echo hi)", Timing(trip["criruntime"]), Timing(trip["containerd"])),
            (
                f"{CONNECTIONS} port-forward connections",
                Timing(many["criruntime"]),
                Timing(many["containerd"]),
            ),
        ],
        target=0.7,
    )
    latency += "\n\n" + report(
        f"the floor: `{handler} exec echo hi` alone on criruntime's container, same rotation",
        [
            (
                "runtime exec vs exec round trip",
                Timing(trip["runtime alone"]),
                Timing(trip["containerd"]),
            )
        ],
        ours=handler,
    )
    rates = [
        f"## streaming throughput, {BIG >> 20} MB, median of {THROUGHPUT_RUNS}",
        f"{'transfer':<34} {'criruntime MB/s':>12} {'containerd MB/s':>14} {'ratio':>7}",
        _rate_row("exec stdout (head -c)", exec_rate["criruntime"], exec_rate["containerd"]),
        _rate_row("exec stdout (dd bs=1M)", dd_rate["criruntime"], dd_rate["containerd"]),
        _rate_row(
            "port-forward, one connection", forward_rate["criruntime"], forward_rate["containerd"]
        ),
        "(target ratio >= 1.00x; all 100 concurrent connections succeeded on both)",
    ]
    return latency + "\n\n" + "\n".join(rates)


if __name__ == "__main__":
    print(run())

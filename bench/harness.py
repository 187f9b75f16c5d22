"""What every benchmark needs: both runtimes started here, CRI clients, timing and a report.

containerd is Debian's 1.6, started by the benchmark with its own root, state, socket and
config under a temp dir (nothing touches a system containerd). criruntime runs from this tree.
Both get the same CNI config and plugin dirs, and the same registry mirror on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc

from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 30.0


@dataclass
class RuntimeUnderTest:
    name: str
    socket: str
    pid: int
    channel: grpc.Channel = field(repr=False)

    @property
    def runtime(self) -> api_grpc.RuntimeServiceStub:
        return api_grpc.RuntimeServiceStub(self.channel)

    @property
    def image(self) -> api_grpc.ImageServiceStub:
        return api_grpc.ImageServiceStub(self.channel)


@dataclass(frozen=True)
class Setup:
    """What both runtimes share in one benchmark run."""

    cni_conf_dir: str
    cni_bin_dirs: list[str]
    registry: str = ""  # HOST:PORT of a plain-HTTP registry on 127.0.0.1, if any
    sandbox_image: str = ""  # containerd needs a pause image; criruntime does not


def _wait_ready(
    name: str, proc: subprocess.Popen[bytes], socket_path: str, log: str
) -> grpc.Channel:
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(socket_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"{name} did not start:\n{f.read()[-3000:]}")
        time.sleep(0.02)
    channel = grpc.insecure_channel(f"unix://{socket_path}")
    grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
    return channel


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _containerd_config(base: str, setup: Setup) -> str:
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    lines = [
        "version = 2",
        f'root = "{base}/root"',
        f'state = "{base}/state"',
        f'[grpc]\naddress = "{base}/containerd.sock"',
        f'[ttrpc]\naddress = "{base}/containerd.sock.ttrpc"',
        '[metrics]\naddress = ""',
        cri,
        f'sandbox_image = "{setup.sandbox_image}"',
        "enable_cdi = false",
        # kubelet-style sandboxes ask for oom_score_adj -998, which this host denies; this
        # containerd switch clamps instead of failing, as criruntime does.
        "restrict_oom_score_adj = true",
        f"{cri[:-1]}.cni]",
        f'bin_dir = "{setup.cni_bin_dirs[0]}"',
        f'conf_dir = "{setup.cni_conf_dir}"',
        f"{cri[:-1]}.containerd.runtimes.runc]",
        'runtime_type = "io.containerd.runc.v2"',
        f"{cri[:-1]}.containerd.runtimes.runc.options]",
        "SystemdCgroup = false",
    ]
    if setup.registry:
        lines += [
            f'{cri[:-1]}.registry.mirrors."{setup.registry}"]',
            f'endpoint = ["http://{setup.registry}"]',
        ]
    return "\n".join(lines) + "\n"


@contextmanager
def containerd(setup: Setup) -> Iterator[RuntimeUnderTest]:
    base = tempfile.mkdtemp(prefix="bench-ctrd-", dir="/tmp")
    config = os.path.join(base, "config.toml")
    with open(config, "w") as f:
        f.write(_containerd_config(base, setup))
    log = os.path.join(base, "containerd.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(["containerd", "--config", config], stdout=out, stderr=out)
    try:
        channel = _wait_ready("containerd", proc, f"{base}/containerd.sock", log)
        yield RuntimeUnderTest("containerd", f"{base}/containerd.sock", proc.pid, channel)
        channel.close()
    finally:
        _stop(proc)
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def criruntime(setup: Setup, extra_config: str = "") -> Iterator[RuntimeUnderTest]:
    base = tempfile.mkdtemp(prefix="bench-crir-", dir="/tmp")
    config = os.path.join(base, "config.toml")
    with open(config, "w") as f:
        f.write(extra_config + "\n")
        f.write(f'[cni]\nconf_dir = "{setup.cni_conf_dir}"\n')
        f.write("bin_dirs = [" + ", ".join(f'"{d}"' for d in setup.cni_bin_dirs) + "]\n")
        if setup.registry:
            f.write(f'[registry]\ninsecure = ["{setup.registry}"]\n')
    sock = os.path.join(base, "cri.sock")
    cmd = [
        sys.executable, "-m", "criruntime", "serve", "--config", config, "--socket", sock,
        "--root", f"{base}/root", "--state", f"{base}/state", "--log-level", "warning",
    ]  # fmt: skip
    log = os.path.join(base, "criruntime.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=REPO)
    try:
        channel = _wait_ready("criruntime", proc, sock, log)
        yield RuntimeUnderTest("criruntime", sock, proc.pid, channel)
        channel.close()
    finally:
        _stop(proc)
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def _unmount_under(base: str) -> None:
    """Lazily unmounts whatever a runtime left mounted under its temp dir, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(base + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


# ---- timing and reporting ----------------------------------------------------------------------


@dataclass
class Timing:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def measure(fn: Callable[[int], None], runs: int, warmup: int = 1) -> Timing:
    """Calls fn(i) warmup + runs times; times only the measured runs."""
    for i in range(warmup):
        fn(-1 - i)
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - started)
    return Timing(samples)


def report(
    title: str,
    rows: list[tuple[str, Timing, Timing]],
    target: float | None = None,
    ours: str = "criruntime",
) -> str:
    """rows: (operation, criruntime timing, containerd timing); ratio = criruntime / containerd.
    `ours` names the first timing's column when it is not criruntime's."""
    lines = [
        f"## {title}",
        f"{'operation':<28} {ours + ' ms':>14} {'containerd ms':>14} {'ratio':>7}",
    ]
    for op, mine, theirs in rows:
        ratio = mine.median / theirs.median if theirs.median else float("nan")
        lines.append(
            f"{op:<28} {mine.median * 1000:>14.1f} {theirs.median * 1000:>14.1f} {ratio:>6.2f}x"
        )
    if target is not None:
        lines.append(f"(medians; target ratio <= {target:.2f}x)")
    return "\n".join(lines)

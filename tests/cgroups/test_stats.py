"""Cgroup usage figures: v1 for real on this host (a cgroup with a process that allocates and
burns CPU), v2 against a fake tree with the kernel's file formats."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from criruntime.cgroups import stats
from criruntime.cgroups.cgroupfs import Cgroupfs, Resources

HOST = Cgroupfs.detect()
needs_v1 = pytest.mark.skipif(HOST.version != 1, reason="host is not on cgroup v1")

# Allocates ~48 MiB, touches it, then spins, so both CPU and memory move.
_HOG = (
    "import time\n"
    "b = bytearray(48 << 20)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "print('ready', flush=True)\n"
    "end = time.monotonic() + 60\n"
    "while time.monotonic() < end: pass\n"
)


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def v1_cgroup() -> Iterator[str]:
    path = f"/crtest-stats-{secrets.token_hex(4)}"
    HOST.create(path)
    try:
        yield path
    finally:
        HOST.remove(path)


@needs_v1
def test_v1_figures_of_a_busy_process(v1_cgroup: str) -> None:
    HOST.apply(v1_cgroup, Resources(memory_limit=256 << 20))
    proc = subprocess.Popen([sys.executable, "-c", _HOG], stdout=subprocess.PIPE, text=True)
    try:
        HOST.add_process(v1_cgroup, proc.pid)
        assert proc.stdout is not None
        # The allocation happens after the move: it is charged to the cgroup.
        assert proc.stdout.readline().strip() == "ready"
        before = stats.read(HOST, v1_cgroup, timestamp=time.time_ns())
        time.sleep(0.3)
        after = stats.read(HOST, v1_cgroup, timestamp=time.time_ns())
    finally:
        proc.kill()
        proc.wait()
    assert before is not None and after is not None
    assert before.cpu_usage_ns is not None and after.cpu_usage_ns is not None
    # Spinning: most of the 0.3 s goes to CPU (a loaded 2-core VM still gives it a good part).
    assert after.cpu_usage_ns - before.cpu_usage_ns > 50_000_000
    assert after.memory_usage is not None and after.memory_usage >= 48 << 20
    assert after.working_set is not None and 48 << 20 <= after.working_set <= after.memory_usage
    assert after.rss is not None and after.rss >= 48 << 20
    assert after.page_faults is not None and after.page_faults >= (48 << 20) // 4096
    assert after.memory_limit == 256 << 20
    assert after.available == (256 << 20) - after.working_set
    assert after.pids == 1


@needs_v1
def test_v1_unlimited_and_missing(v1_cgroup: str) -> None:
    figures = stats.read(HOST, v1_cgroup, timestamp=1)
    assert figures is not None
    assert figures.memory_limit is None and figures.available is None
    assert figures.pids == 0 and figures.timestamp == 1
    assert stats.read(HOST, v1_cgroup + "/absent", timestamp=1) is None


def test_v2_fake_tree(tmp_path: str) -> None:
    root = str(tmp_path)
    cg = Cgroupfs(version=2, root=root)
    d = os.path.join(root, "kubepods/pod1/c1")
    write(f"{d}/cpu.stat", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    write(f"{d}/memory.current", "104857600\n")
    write(
        f"{d}/memory.stat",
        "anon 52428800\nfile 52428800\ninactive_file 20971520\npgfault 1234\npgmajfault 7\n",
    )
    write(f"{d}/memory.max", "209715200\n")
    write(f"{d}/memory.swap.current", "4096\n")
    write(f"{d}/memory.swap.max", "max\n")
    write(f"{d}/pids.current", "3\n")
    figures = stats.read(cg, "/kubepods/pod1/c1", timestamp=42)
    assert figures == stats.CgroupStats(
        timestamp=42,
        cpu_usage_ns=2_500_000_000,
        memory_usage=100 << 20,
        working_set=80 << 20,
        rss=50 << 20,
        page_faults=1234,
        major_page_faults=7,
        memory_limit=200 << 20,
        swap_usage=4096,
        swap_limit=None,
        pids=3,
    )
    assert figures.available == 120 << 20
    memory = stats.memory_usage(figures)
    assert memory.working_set_bytes.value == 80 << 20
    assert memory.available_bytes.value == 120 << 20
    swap = stats.swap_usage(figures)
    assert swap is not None and swap.swap_usage_bytes.value == 4096
    assert not swap.HasField("swap_available_bytes")  # unlimited


def test_v2_unlimited_memory_and_no_cgroup(tmp_path: str) -> None:
    root = str(tmp_path)
    cg = Cgroupfs(version=2, root=root)
    write(f"{root}/p/memory.current", "10\n")
    write(f"{root}/p/memory.max", "max\n")
    write(f"{root}/p/memory.stat", "inactive_file 20\n")  # more than usage: clamp at 0
    figures = stats.read(cg, "/p", timestamp=1)
    assert figures is not None
    assert figures.memory_limit is None and figures.available is None
    assert figures.working_set == 0 and figures.cpu_usage_ns is None
    assert not stats.memory_usage(figures).HasField("available_bytes")
    assert stats.read(cg, "/nope", timestamp=1) is None


def test_cpu_rate_over_previous_sample() -> None:
    rates = stats.CpuRates()
    assert rates.rate("c", 1_000_000_000, 5_000_000_000) is None  # first sample: no rate
    # 0.5 s of CPU over 2 s of wall time: a quarter of a core.
    assert rates.rate("c", 3_000_000_000, 5_500_000_000) == 250_000_000
    assert rates.rate("c", 3_000_000_000, 5_600_000_000) is None  # no time passed
    assert rates.rate("c", 4_000_000_000, 100) is None  # counter went back: a new cgroup
    rates.keep_only({"other"})
    assert rates.rate("c", 5_000_000_000, 200) is None  # forgotten

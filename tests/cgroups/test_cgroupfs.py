"""The cgroupfs driver: v1 for real on this host, v2 against a fake tree under tmp."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from criruntime.cgroups.cgroupfs import (
    Cgroupfs,
    Resources,
    shares_to_weight,
    systemd_slice_to_path,
)

HOST = Cgroupfs.detect()
needs_v1 = pytest.mark.skipif(HOST.version != 1, reason="host is not on cgroup v1")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def v1_path() -> Iterator[str]:
    top = f"/crtest-{secrets.token_hex(4)}"
    yield f"{top}/burstable/pod1"
    for h in HOST.hierarchies:  # even after a failure: deepest first
        for rel in (f"{top}/burstable/pod1", f"{top}/burstable", top):
            if os.path.isdir(h + rel):
                os.rmdir(h + rel)


@needs_v1
def test_v1_create_apply_remove(v1_path: str) -> None:
    top = "/" + v1_path.strip("/").split("/")[0]
    assert HOST.missing(v1_path) == top  # known, to be recorded, before anything is made
    assert HOST.create(v1_path) == top
    assert HOST.missing(v1_path) == ""
    assert HOST.create(v1_path) == ""  # exists: nothing new, nothing owned
    for d in HOST.dirs(v1_path):
        assert os.path.isdir(d)
    res = Resources(cpu_shares=256, cpu_quota=50_000, memory_limit=32 << 20)
    HOST.apply(v1_path, res + Resources(memory_limit=1 << 20, cpu_shares=2))
    assert read(f"/sys/fs/cgroup/cpu{v1_path}/cpu.shares") == "258"
    assert read(f"/sys/fs/cgroup/cpu{v1_path}/cpu.cfs_quota_us") == "50000"
    assert read(f"/sys/fs/cgroup/cpu{v1_path}/cpu.cfs_period_us") == "100000"
    assert int(read(f"/sys/fs/cgroup/memory{v1_path}/memory.limit_in_bytes")) == 33 << 20
    # A v1 cpuset child inherits cpus/mems, so processes can join it.
    assert read(f"/sys/fs/cgroup/cpuset{v1_path}/cpuset.cpus") == read(
        "/sys/fs/cgroup/cpuset/cpuset.cpus"
    )
    proc = subprocess.Popen(["sleep", "60"])
    try:
        HOST.add_process(v1_path, proc.pid)
        assert HOST.pids(v1_path) == [proc.pid]
        HOST.remove(v1_path, owned_from=top)  # kills what is inside
        assert proc.wait(5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not HOST.exists(v1_path) and not HOST.exists(top)
    HOST.remove(v1_path, owned_from=top)  # idempotent


@needs_v1
def test_v1_remove_keeps_parents_it_does_not_own(v1_path: str) -> None:
    parent = v1_path.rsplit("/", 1)[0]
    HOST.create(parent)
    owned = HOST.create(v1_path)
    assert owned == v1_path
    HOST.remove(v1_path, owned_from=owned)
    assert HOST.exists(parent) and not HOST.exists(v1_path)


def test_detect_v1_hybrid_and_v2(tmp_path: Any) -> None:
    hybrid = tmp_path / "hybrid"
    hybrid.write_text(
        "30 25 0:26 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755\n"
        "31 30 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw\n"
        "33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct\n"
        "34 30 0:30 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory\n"
    )
    cg = Cgroupfs.detect(str(hybrid))
    assert cg.version == 1
    assert cg.hierarchies == [
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/unified",
    ]
    unified = tmp_path / "unified"
    unified.write_text("30 25 0:26 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n")
    assert Cgroupfs.detect(str(unified)).version == 2


@pytest.fixture
def v2(tmp_path: Any) -> Cgroupfs:
    root = tmp_path / "cgroup"
    (root / "kubepods").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    (root / "kubepods" / "cgroup.controllers").write_text("cpu memory pids\n")
    return Cgroupfs(2, str(root))


def test_v2_create_enables_controllers_and_applies(v2: Cgroupfs) -> None:
    path = "/kubepods/burstable/podabc"
    assert v2.missing(path) == "/kubepods/burstable"
    assert v2.create(path) == "/kubepods/burstable"
    root = v2.root
    assert read(f"{root}/kubepods/cgroup.subtree_control") == "+cpu +memory +pids"
    v2.apply(
        path,
        Resources(
            cpu_shares=1024,
            cpu_quota=20_000,
            cpu_period=50_000,
            memory_limit=100 << 20,
            memory_swap_limit=150 << 20,
            cpuset_cpus="0",
            hugepage_limits={"2MB": 4 << 20},
            unified={"memory.high": "90000000"},
        ),
    )
    d = f"{root}{path}"
    assert read(f"{d}/cpu.weight") == str(shares_to_weight(1024)) == "39"
    assert read(f"{d}/cpu.max") == "20000 50000"
    assert read(f"{d}/memory.max") == str(100 << 20)
    assert read(f"{d}/memory.swap.max") == str(50 << 20)
    assert read(f"{d}/cpuset.cpus") == "0"
    assert read(f"{d}/hugetlb.2MB.max") == str(4 << 20)
    assert read(f"{d}/memory.high") == "90000000"


def test_v2_pids_and_dirs(v2: Cgroupfs) -> None:
    v2.create("/a/b")
    with open(os.path.join(v2.root, "a/b/cgroup.procs"), "w") as f:
        f.write("12\n7\n")
    assert v2.pids("/a/b") == [7, 12]
    assert v2.dirs("/a/b") == [os.path.join(v2.root, "a/b")]


def test_shares_to_weight_matches_runc() -> None:
    assert shares_to_weight(0) == 0
    assert shares_to_weight(2) == 1
    assert shares_to_weight(262144) == 10000
    assert shares_to_weight(1024) == 39


def test_systemd_slice_to_path() -> None:
    assert systemd_slice_to_path("kubepods-burstable-pod1.slice") == (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
    )
    assert systemd_slice_to_path("/kubepods/pod1") == "/kubepods/pod1"


def test_resources_sum_scales_quota_to_one_period() -> None:
    a = Resources(cpu_quota=50_000, cpu_period=100_000, memory_limit=10)
    b = Resources(cpu_quota=10_000, cpu_period=50_000, memory_limit=5)
    total = a + b
    assert (total.cpu_quota, total.cpu_period, total.memory_limit) == (70_000, 100_000, 15)

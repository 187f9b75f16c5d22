"""Limit checks shared by pods and containers: what no cgroup can take is refused up front."""

from __future__ import annotations

import os
import time

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups import limits
from criruntime.cgroups.limits import check_resources, hugepage_sizes, parse_list
from criruntime.errors import InvalidArgument

R = api.LinuxContainerResources


def test_parse_list() -> None:
    assert parse_list("0") == {0}
    assert parse_list("0-2,4") == {0, 1, 2, 4}
    for bad in ("", "a", "1-", "2-1", "0,,1", " 0", "-1"):
        with pytest.raises(ValueError):
            parse_list(bad)


def test_hugepage_sizes_named_as_cri_names_them(tmp_path: str) -> None:
    root = str(tmp_path)
    for name in ("hugepages-2048kB", "hugepages-1048576kB", "hugepages-64kB", "other"):
        os.mkdir(os.path.join(root, name))
    assert hugepage_sizes(root) == {"2MB", "1GB", "64KB"}
    assert hugepage_sizes(os.path.join(root, "missing")) == set()


def test_values_every_host_takes_pass() -> None:
    check_resources(R())
    check_resources(
        R(cpu_shares=2, cpu_quota=-1, cpu_period=100_000, memory_limit_in_bytes=64 << 20,
          memory_swap_limit_in_bytes=-1, cpuset_cpus="0", cpuset_mems="0",
          unified={"memory.high": "max", "cgroup.max.depth": "3"})
    )  # fmt: skip


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (R(cpu_shares=-5), "linux.resources.cpu_shares must be >= 0, got -5"),
        (R(cpu_period=-1), "cpu_period must be >= 0"),
        (R(cpu_quota=-2), "cpu_quota must be >= -1"),
        (R(memory_limit_in_bytes=-1), "memory_limit_in_bytes must be >= 0"),
        (R(memory_swap_limit_in_bytes=-2), "memory_swap_limit_in_bytes must be >= -1"),
        (R(cpuset_cpus="abc"), "cpuset_cpus 'abc' is not a list"),
        (R(cpuset_mems="0-"), "cpuset_mems '0-' is not a list"),
        (R(cpuset_cpus="0,60000"), "this node has no CPU 60000"),
        (R(cpu_quota=500), "cpu_quota must be -1 or 1000.."),
        (R(cpu_period=10), "cpu_period must be 1000..1000000"),
        (R(memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=1 << 20), "must be at least"),
        (R(memory_swap_limit_in_bytes=1 << 20), "must be at least"),
        (R(hugepage_limits=[api.HugepageLimit(page_size="3MB", limit=1)]), "page size '3MB'"),
        (R(unified={"../../x": "1"}), "unified key '../../x'"),
        (R(unified={"cgroup.procs": "1"}), "unified key 'cgroup.procs'"),
        (R(unified={"memory": "1"}), "unified key 'memory'"),
    ],
)
def test_values_no_cgroup_takes_are_invalid(
    resources: api.LinuxContainerResources, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        check_resources(resources, "linux.resources")


def test_hugepage_sizes_are_those_of_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "hugepage_sizes", lambda: {"2MB"})
    check_resources(R(hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=0)]))
    with pytest.raises(InvalidArgument, match=r"'1GB' is not one this node has \(2MB\)"):
        check_resources(R(hugepage_limits=[api.HugepageLimit(page_size="1GB", limit=0)]))


def test_a_huge_cpuset_range_is_refused_cheaply_with_a_short_message() -> None:
    # 9 bytes that used to cost 0.45 s, 200 MB and a 15 MB message listing every missing CPU.
    started = time.monotonic()
    for value in ("0-2000000", "0-65536", ",".join(["0-65536"] * 100)):
        with pytest.raises(InvalidArgument) as e:
            check_resources(R(cpuset_cpus=value))
        assert len(str(e.value)) < 300
    with pytest.raises(InvalidArgument) as e:
        check_resources(R(cpuset_cpus="0-65535"))
    assert "this node has no CPU" in str(e.value) and len(str(e.value)) < 300
    with pytest.raises(InvalidArgument) as e:
        check_resources(R(cpuset_cpus=",".join(str(n) for n in range(1000, 1200, 2))))
    assert "and 92 more ranges" in str(e.value)
    assert time.monotonic() - started < 1


def test_missing_ranges_are_computed_without_expanding() -> None:
    assert limits._missing([(0, 10)], [(0, 1), (3, 4), (8, 20)]) == [(2, 2), (5, 7)]
    assert limits._missing([(0, 3), (2, 5)], [(0, 5)]) == []
    assert limits._missing([(5, 5)], []) == [(5, 5)]
    assert parse_list("0-2,4") == {0, 1, 2, 4}
    with pytest.raises(ValueError):
        limits.parse_ranges(f"0-{limits.MAX_LIST_NUMBER + 1}")

"""Limit checks shared by pods and containers: what no cgroup can take is refused up front."""

from __future__ import annotations

import os

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
        (R(cpuset_cpus="0,100000"), "this node has no CPU 100000"),
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

"""HostCgroups: the one rule for limits the host cannot enforce (pods, create and update)."""

from __future__ import annotations

from typing import Any

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.cgroupfs import Cgroupfs
from criruntime.cgroups.host import HostCgroups
from criruntime.errors import InvalidArgument

R = api.LinuxContainerResources
FULL_V1 = frozenset({"cpu", "cpuacct", "cpuset", "memory", "pids", "hugetlb"})
HYBRID = FULL_V1 - {"hugetlb"}  # this project's hosts: hugetlb only on the unified mount
# What kubelet sends for a pod asking no huge pages on a node with 2MB and 1GB pages.
KUBELET_HUGEPAGES = [
    api.HugepageLimit(page_size="2MB", limit=0),
    api.HugepageLimit(page_size="1GB", limit=0),
]


@pytest.fixture(autouse=True)
def _node_page_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    from criruntime.cgroups import limits

    monkeypatch.setattr(limits, "hugepage_sizes", lambda: {"2MB", "1GB"})


def test_hugepage_limits_dropped_with_a_warning_without_hugetlb() -> None:
    host = HostCgroups(1, HYBRID, swap=True)
    warnings: list[str] = []
    asked = R(memory_limit_in_bytes=64 << 20, hugepage_limits=KUBELET_HUGEPAGES)
    fitted = host.fit(asked, "linux.resources", warnings)
    assert list(fitted.hugepage_limits) == []
    assert fitted.memory_limit_in_bytes == 64 << 20
    assert len(asked.hugepage_limits) == 2, "the caller's message is not changed"
    assert warnings == ["hugepage limits dropped: this host has no usable hugetlb controller"]


def test_hugepage_limits_kept_where_hugetlb_is_usable() -> None:
    warnings: list[str] = []
    fitted = HostCgroups(1, FULL_V1, swap=True).fit(
        R(hugepage_limits=KUBELET_HUGEPAGES), "linux.resources", warnings
    )
    assert [h.page_size for h in fitted.hugepage_limits] == ["2MB", "1GB"]
    assert warnings == []


def test_hugepage_limits_refused_when_not_tolerated() -> None:
    host = HostCgroups(1, HYBRID, swap=True, tolerate_missing_hugetlb=False)
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.hugepage_limits: .*hugetlb"):
        host.fit(R(hugepage_limits=KUBELET_HUGEPAGES), "linux.resources", [])
    host.fit(R(memory_limit_in_bytes=1 << 20), "linux.resources", [])  # nothing to refuse


def test_swap_and_unified_dropped_where_the_host_lacks_them() -> None:
    warnings: list[str] = []
    fitted = HostCgroups(1, FULL_V1, swap=False).fit(
        R(memory_limit_in_bytes=1 << 20, memory_swap_limit_in_bytes=2 << 20,
          unified={"memory.high": "max"}),
        "linux.resources",
        warnings,
    )  # fmt: skip
    assert fitted.memory_swap_limit_in_bytes == 0 and not fitted.unified
    assert fitted.memory_limit_in_bytes == 1 << 20
    assert len(warnings) == 2
    v2 = HostCgroups(2, frozenset({"cpu", "memory"}), swap=True)
    kept = v2.fit(R(unified={"memory.high": "max"}), "linux.resources", warnings)
    assert dict(kept.unified) == {"memory.high": "max"}


@pytest.mark.parametrize(
    ("resources", "controller", "field"),
    [
        (R(cpu_shares=2), "cpu", "cpu_shares"),
        (R(cpu_quota=1000), "cpu", "cpu_quota"),
        (R(cpuset_cpus="0"), "cpuset", "cpuset_cpus"),
        (R(memory_limit_in_bytes=1 << 20), "memory", "memory_limit_in_bytes"),
    ],
)
def test_limits_without_their_controller_are_refused(
    resources: Any, controller: str, field: str
) -> None:
    host = HostCgroups(1, FULL_V1 - {controller}, swap=True)
    with pytest.raises(InvalidArgument, match=rf"linux\.resources\.{field}: .*no {controller}"):
        host.fit(resources, "linux.resources", [])


def test_bad_values_refused_whatever_the_host_has() -> None:
    host = HostCgroups(1, HYBRID, swap=False)
    with pytest.raises(InvalidArgument, match="unified key"):
        host.fit(R(unified={"../x": "1"}), "linux.resources", [])
    with pytest.raises(InvalidArgument, match="page size '3MB'"):
        host.fit(R(hugepage_limits=[api.HugepageLimit(page_size="3MB")]), "x", [])


def test_detect_on_a_hybrid_tree(tmp_path: Any) -> None:
    for name in ("cpu,cpuacct", "memory", "cpuset", "unified", "systemd"):
        (tmp_path / name).mkdir()
    (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text("0")
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    hierarchies = [str(tmp_path / n) for n in ("cpu,cpuacct", "memory", "cpuset", "systemd")]
    cg = Cgroupfs(1, str(tmp_path), [*hierarchies, str(tmp_path / "unified")])
    host = HostCgroups.detect(cg)
    assert host.controllers == {"cpu", "cpuacct", "memory", "cpuset"}
    assert host.swap and host.version == 1
    assert host.describe()["hugetlb"] is False


def test_detect_v2(tmp_path: Any) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    host = HostCgroups.detect(Cgroupfs(2, str(tmp_path)), tolerate_missing_hugetlb=False)
    assert "hugetlb" in host.controllers and host.swap
    assert host.describe()["tolerateMissingHugetlbController"] is False


def test_this_host() -> None:
    """The real host agrees with /proc/cgroups: a controller counts only on a v1 hierarchy."""
    host = HostCgroups.detect(Cgroupfs.detect())
    if host.version == 1:
        with open("/proc/cgroups") as f:
            attached = {
                fields[0] for line in f if not line.startswith("#")
                for fields in [line.split()] if fields[1] != "0"
            }  # fmt: skip
        assert host.controllers == attached

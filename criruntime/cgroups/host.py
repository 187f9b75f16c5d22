"""What this host's cgroups can enforce, and the one rule for limits it cannot.

kubelet asks for limits whatever the node has: `hugepage_limits` for every page size (limit 0 when
the pod asks for none), a swap limit, `unified` keys. A limit the host cannot enforce would make
runc fail the container at start ("cannot set hugetlb limit"), so every path that applies limits
(the pod cgroup, CreateContainer, UpdateContainerResources) first passes them through `fit`:

- hugepage limits without a usable hugetlb controller are dropped with a warning, as containerd
  does by default (`tolerate_missing_hugetlb_controller`); with that off they are INVALID_ARGUMENT.
  On a cgroup v1 "hybrid" host hugetlb may sit on the unified mount, where runc's v1 manager
  cannot use it: only a v1 hierarchy counts there.
- a swap limit without swap accounting, and `unified` keys on cgroup v1, are dropped with a
  warning: they are optional in CRI and peers ignore them the same way.
- cpu, cpuset or memory limits without their controller are INVALID_ARGUMENT naming it: dropping a
  memory limit silently would hide a real difference from what the pod asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.cgroupfs import Cgroupfs
from criruntime.cgroups.limits import check_resources
from criruntime.errors import InvalidArgument

# Controllers a CRI resource field needs, and the fields (as set) that need it.
_REQUIRED = {
    "cpu": ("cpu_shares", "cpu_quota", "cpu_period"),
    "cpuset": ("cpuset_cpus", "cpuset_mems"),
    "memory": ("memory_limit_in_bytes",),
}


@dataclass(frozen=True)
class HostCgroups:
    version: int
    controllers: frozenset[str]  # usable by the OCI runtime (v1: on a v1 hierarchy)
    swap: bool  # swap accounting (v1: memory.memsw.*)
    tolerate_missing_hugetlb: bool = True

    @classmethod
    def detect(cls, cgroupfs: Cgroupfs, tolerate_missing_hugetlb: bool = True) -> HostCgroups:
        controllers = cgroupfs.controllers()
        if cgroupfs.version == 2:
            swap = "memory" in controllers
        else:
            memory = cgroupfs.hierarchy("memory")
            swap = memory is not None and os.path.exists(
                os.path.join(memory, "memory.memsw.limit_in_bytes")
            )
        return cls(cgroupfs.version, controllers, swap, tolerate_missing_hugetlb)

    def fit(
        self, r: api.LinuxContainerResources, where: str, warnings: list[str]
    ) -> api.LinuxContainerResources:
        """`r`, checked (check_resources), without what this host cannot enforce; each dropped
        limit adds a warning, each limit that may not be dropped raises InvalidArgument."""
        check_resources(r, where)  # bad input is refused whatever the host has
        fitted = api.LinuxContainerResources()
        fitted.CopyFrom(r)
        if r.hugepage_limits and "hugetlb" not in self.controllers:
            if not self.tolerate_missing_hugetlb:
                raise InvalidArgument(
                    f"{where}.hugepage_limits: this host has no usable hugetlb cgroup controller "
                    "(set [cgroups] tolerate_missing_hugetlb_controller = true to drop them)"
                )
            warnings.append("hugepage limits dropped: this host has no usable hugetlb controller")
            del fitted.hugepage_limits[:]
        if r.memory_swap_limit_in_bytes and not self.swap:
            warnings.append("memory swap limit dropped: this host has no swap accounting")
            fitted.memory_swap_limit_in_bytes = 0
        if r.unified and self.version == 1:
            warnings.append("unified cgroup resources dropped: they need cgroup v2")
            fitted.unified.clear()
        for controller, fields in _REQUIRED.items():
            asked = [f for f in fields if getattr(r, f)]
            if asked and controller not in self.controllers:
                raise InvalidArgument(
                    f"{where}.{asked[0]}: this host has no {controller} cgroup controller"
                )
        return fitted

    def describe(self) -> dict[str, Any]:
        """For Status(verbose): what kubelet's limits can rely on here."""
        return {
            "version": self.version,
            "controllers": sorted(self.controllers),
            "swapAccounting": self.swap,
            "hugetlb": "hugetlb" in self.controllers,
            "tolerateMissingHugetlbController": self.tolerate_missing_hugetlb,
        }

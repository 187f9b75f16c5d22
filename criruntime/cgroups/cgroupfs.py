"""The cgroupfs driver, cgroup v1 and v2 in one place.

A `Cgroupfs` is the host's cgroup layout, detected once from /proc/self/mountinfo: v2 when
/sys/fs/cgroup itself is cgroup2, otherwise v1 with one hierarchy per mount (plus the unified
hierarchy of a hybrid host, which runc also populates). The pod cgroup is one relative path
(e.g. "/kubepods/burstable/pod<uid>", runc's cgroupsPath form), made in every hierarchy.

Tests pass a fake tree (`Cgroupfs(version=2, root=tmpdir)`): nothing here assumes a real
cgroupfs except that writes to its files succeed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field

log = logging.getLogger("criruntime.cgroups")

DEFAULT_ROOT = "/sys/fs/cgroup"
DEFAULT_CFS_PERIOD = 100_000
_V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids")
_V1_CONTROLLERS = frozenset(
    {"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc",
     "net_cls", "net_prio", "perf_event", "pids", "rdma"}
)  # fmt: skip


@dataclass(frozen=True)
class Resources:
    """The subset of CRI LinuxContainerResources a pod cgroup takes; 0/"" means unset."""

    cpu_shares: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    memory_limit: int = 0
    memory_swap_limit: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepage_limits: dict[str, int] = field(default_factory=dict)  # "2MB" -> bytes
    unified: dict[str, str] = field(default_factory=dict)  # v2 only: file -> value

    def __add__(self, other: Resources) -> Resources:
        """Pod limits: the containers' sum plus the RuntimeClass overhead."""
        period = self.cpu_period or other.cpu_period or DEFAULT_CFS_PERIOD

        def quota(r: Resources) -> int:
            return r.cpu_quota * period // (r.cpu_period or DEFAULT_CFS_PERIOD)

        both_quota = self.cpu_quota > 0 and other.cpu_quota > 0
        return Resources(
            cpu_shares=self.cpu_shares + other.cpu_shares,
            cpu_quota=quota(self) + quota(other) if both_quota else self.cpu_quota,
            cpu_period=period if both_quota or self.cpu_quota else self.cpu_period,
            memory_limit=self.memory_limit + other.memory_limit if self.memory_limit else 0,
            memory_swap_limit=self.memory_swap_limit + other.memory_swap_limit
            if self.memory_swap_limit
            else 0,
            cpuset_cpus=self.cpuset_cpus,
            cpuset_mems=self.cpuset_mems,
            hugepage_limits={
                k: v + other.hugepage_limits.get(k, 0) for k, v in self.hugepage_limits.items()
            },
            unified=dict(self.unified),
        )


def shares_to_weight(shares: int) -> int:
    """runc's conversion of v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000]."""
    if shares == 0:
        return 0
    return 1 + ((max(2, min(shares, 262144)) - 2) * 9999) // 262142


def systemd_slice_to_path(name: str) -> str:
    """ "kubepods-burstable-pod1.slice" -> "/kubepods.slice/kubepods-burstable.slice/...",
    as the systemd driver lays slices out on disk; used as a plain cgroupfs path here."""
    if not name.endswith(".slice") or "/" in name:
        return name
    parts = name[: -len(".slice")].split("-")
    return "/" + "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


class Cgroupfs:
    def __init__(self, version: int, root: str, hierarchies: list[str] | None = None) -> None:
        self.version = version
        self.root = root
        # v1: every hierarchy mount point (cpu, memory, ..., and a hybrid host's unified one);
        # v2: just the root.
        self.hierarchies = hierarchies if hierarchies is not None else [root]

    @classmethod
    def detect(cls, mountinfo: str = "/proc/self/mountinfo") -> Cgroupfs:
        v1: list[str] = []
        unified: str | None = None
        with open(mountinfo) as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fstype = post.split(" ", 1)[0]
                mount_point = pre.split(" ")[4]
                if fstype == "cgroup2":
                    if mount_point == DEFAULT_ROOT:
                        return cls(2, DEFAULT_ROOT)
                    unified = mount_point
                elif fstype == "cgroup" and mount_point not in v1:
                    v1.append(mount_point)
        if unified:
            v1.append(unified)
        return cls(1, DEFAULT_ROOT, v1)

    # ---- paths ------------------------------------------------------------------------------

    def dirs(self, path: str) -> list[str]:
        rel = path.strip("/")
        return [os.path.join(h, rel) for h in self.hierarchies]

    def controllers(self) -> frozenset[str]:
        """The controllers limits can be set with. v1: those on a v1 hierarchy (a hybrid host's
        unified mount does not count: runc's v1 manager never writes there); v2: the root's."""
        if self.version == 2:
            try:
                with open(os.path.join(self.root, "cgroup.controllers")) as f:
                    return frozenset(f.read().split())
            except OSError:
                return frozenset()
        return frozenset(
            c
            for h in self.hierarchies
            for c in os.path.basename(h).split(",")
            if c in _V1_CONTROLLERS
        )

    def hierarchy(self, name: str) -> str | None:
        """The v1 mount of a controller (co-mounts like "cpu,cpuacct" included)."""
        for h in self.hierarchies:
            if name in os.path.basename(h).split(","):
                return h
        return None

    def controller_file(self, controller: str, path: str, name: str) -> str | None:
        """Where a controller's file of the cgroup at `path` lives; None when a v1 host has no
        hierarchy for that controller."""
        return self._file(controller, path, name)

    def _file(self, controller: str, path: str, name: str) -> str | None:
        if self.version == 2:
            return os.path.join(self.root, path.strip("/"), name)
        h = self.hierarchy(controller)
        return os.path.join(h, path.strip("/"), name) if h else None

    # ---- lifecycle --------------------------------------------------------------------------

    def missing(self, path: str) -> str:
        """The top-most part of `path` absent from some hierarchy: what `create` will make (and
        return), known before it makes anything."""
        rel = ""
        for part in [p for p in path.split("/") if p]:
            rel = f"{rel}/{part}"
            if not all(os.path.isdir(os.path.join(h, rel.lstrip("/"))) for h in self.hierarchies):
                return rel
        return ""

    def create(self, path: str) -> str:
        """Makes the cgroup (and missing parents) in every hierarchy. Returns the top-most
        cgroup it made, which `remove(path, owned_from=...)` removes up to; "" if none."""
        top = ""
        for h in self.hierarchies:
            made = self._mkdirs(h, path)
            if made and (not top or len(made) < len(top)):
                top = made
        return top

    def _mkdirs(self, hierarchy: str, path: str) -> str:
        top = ""
        current, rel = hierarchy, ""
        for part in [p for p in path.split("/") if p]:
            parent, current, rel = current, os.path.join(current, part), f"{rel}/{part}"
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                continue
            top = top or rel
            if self.version == 2:
                self._enable_controllers(parent)
            elif os.path.basename(hierarchy) == "cpuset":
                # A v1 cpuset starts empty and refuses tasks until cpus and mems are set.
                for name in ("cpuset.cpus", "cpuset.mems"):
                    self._copy_if_empty(os.path.join(parent, name), os.path.join(current, name))
        return top

    @staticmethod
    def _copy_if_empty(src: str, dst: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            with open(dst) as f:
                if f.read().strip():
                    return
            with open(src) as f:
                value = f.read().strip()
            with open(dst, "w") as f:
                f.write(value)

    @staticmethod
    def _enable_controllers(parent: str) -> None:
        try:
            with open(os.path.join(parent, "cgroup.controllers")) as f:
                available = f.read().split()
        except FileNotFoundError:
            return
        wanted = [c for c in _V2_CONTROLLERS if c in available]
        if wanted:
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join("+" + c for c in wanted))

    def apply(self, path: str, res: Resources) -> None:
        """Writes the limits that are set; a limit the host lacks a file for is skipped."""
        writes: list[tuple[str, str, str]] = []  # (controller, file, value)
        if self.version == 1:
            if res.cpu_shares:
                writes.append(("cpu", "cpu.shares", str(res.cpu_shares)))
            if res.cpu_quota:
                period = res.cpu_period or DEFAULT_CFS_PERIOD
                writes.append(("cpu", "cpu.cfs_period_us", str(period)))
                writes.append(("cpu", "cpu.cfs_quota_us", str(res.cpu_quota)))
            if res.memory_limit:
                writes.append(("memory", "memory.limit_in_bytes", str(res.memory_limit)))
            if res.memory_swap_limit:
                writes.append(("memory", "memory.memsw.limit_in_bytes", str(res.memory_swap_limit)))
            for size, limit in res.hugepage_limits.items():
                writes.append(("hugetlb", f"hugetlb.{size}.limit_in_bytes", str(limit)))
        else:
            if res.cpu_shares:
                writes.append(("cpu", "cpu.weight", str(shares_to_weight(res.cpu_shares))))
            if res.cpu_quota:
                period = res.cpu_period or DEFAULT_CFS_PERIOD
                writes.append(("cpu", "cpu.max", f"{res.cpu_quota} {period}"))
            if res.memory_limit:
                writes.append(("memory", "memory.max", str(res.memory_limit)))
                if res.memory_swap_limit > res.memory_limit:
                    swap = res.memory_swap_limit - res.memory_limit
                    writes.append(("memory", "memory.swap.max", str(swap)))
            for size, limit in res.hugepage_limits.items():
                writes.append(("hugetlb", f"hugetlb.{size}.max", str(limit)))
            writes += [("", name, value) for name, value in sorted(res.unified.items())]
        if res.cpuset_cpus:
            writes.append(("cpuset", "cpuset.cpus", res.cpuset_cpus))
        if res.cpuset_mems:
            writes.append(("cpuset", "cpuset.mems", res.cpuset_mems))
        for controller, name, value in writes:
            target = self._file(controller, path, name)
            if target is None:
                log.debug("cgroup %s: no %s hierarchy, skipping %s", path, controller, name)
                continue
            if self.version == 1 and not os.path.exists(target):
                log.debug("cgroup %s: host lacks %s, skipping", path, name)
                continue
            with open(target, "w") as f:
                f.write(value)

    def add_process(self, path: str, pid: int) -> None:
        for d in self.dirs(path):
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def pids(self, path: str) -> list[int]:
        found: set[int] = set()
        for d in self.dirs(path):
            with contextlib.suppress(FileNotFoundError), open(os.path.join(d, "cgroup.procs")) as f:
                found.update(int(x) for x in f.read().split())
        return sorted(found)

    def exists(self, path: str) -> bool:
        return any(os.path.isdir(d) for d in self.dirs(path))

    def remove(self, path: str, owned_from: str = "", timeout: float = 5.0) -> None:
        """Kills what is left inside and removes the cgroup from every hierarchy, then its
        parents up to `owned_from` while they are empty. A cgroup already gone is fine."""
        deadline = time.monotonic() + timeout
        while True:
            for pid in self.pids(path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            busy = []
            for d in self.dirs(path):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    busy.append(d)
            if not busy:
                break
            if time.monotonic() > deadline:
                raise OSError(errno.EBUSY, f"cgroup still busy after {timeout}s", busy[0])
            time.sleep(0.01)
        owned = "/" + owned_from.strip("/")
        current = "/" + path.strip("/")
        while owned_from and current != owned and current.startswith(owned + "/"):
            current = os.path.dirname(current)
            for d in self.dirs(current):
                with contextlib.suppress(FileNotFoundError, OSError):
                    os.rmdir(d)  # busy or not empty: another pod lives there

"""Usage figures of one cgroup (CPU, memory, swap, processes), read from cgroup v1 or v2.

The v1/v2 split lives here and in cgroupfs.py only. Figures follow what containerd and cAdvisor
report, so kubelet's eviction and summary API read them the same way:

- working set = usage - inactive file pages (clamped at 0): the memory the kernel cannot
  simply drop, what kubelet evicts on.
- available = limit - working set, only when the cgroup is limited.
- rss = v1 total_rss, v2 anon; page faults from memory.stat (v1 "total_" hierarchical ones).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.cgroupfs import Cgroupfs

# v1 writes "unlimited" as PAGE_COUNTER_MAX pages (9223372036854771712 on 4k pages); anything
# this large bounds nothing.
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class CgroupStats:
    timestamp: int  # unix nanoseconds, when the files were read
    cpu_usage_ns: int | None = None  # cumulative CPU time of every task, all cores
    memory_usage: int | None = None  # bytes, page cache included
    working_set: int | None = None
    rss: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    memory_limit: int | None = None  # None: unlimited
    swap_usage: int | None = None  # None: the host accounts no swap
    swap_limit: int | None = None  # None: unlimited (or no swap accounting)
    pids: int | None = None

    @property
    def available(self) -> int | None:
        if self.memory_limit is None or self.working_set is None:
            return None
        return max(0, self.memory_limit - self.working_set)


def _read(path: str | None) -> str | None:
    """A cgroup file's text; None when it (or its cgroup) is not there. Raw os calls: a stats
    list reads ~5 files per container, and a text-mode open() costs twice as much."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone, or the host lacks that file
        return None
    try:
        return os.read(fd, 65536).decode().strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    with contextlib.suppress(ValueError):
        return int(text)
    return None


def _keyed(text: str | None) -> dict[str, int]:
    """Parses "key value" lines (memory.stat, cpu.stat, cpuacct.stat)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def read(cg: Cgroupfs, path: str, *, timestamp: int) -> CgroupStats | None:
    """The figures of the cgroup at `path` (runc cgroupsPath form); None when it does not exist
    (a container not started yet, or gone). A controller the host lacks leaves its figures None.
    """
    if cg.version == 2:
        return _read_v2(cg, path, timestamp)
    return _read_v1(cg, path, timestamp)


def _read_v1(cg: Cgroupfs, path: str, timestamp: int) -> CgroupStats | None:
    # Five small files: memory.stat also holds the swap figures (total_swap only where swap is
    # accounted) and the hierarchical limits, so memsw files need no reads of their own.
    usage = _int(_read(cg.controller_file("memory", path, "memory.usage_in_bytes")))
    cpu = _int(_read(cg.controller_file("cpuacct", path, "cpuacct.usage")))
    if usage is None and cpu is None:
        return None
    mem = _keyed(_read(cg.controller_file("memory", path, "memory.stat")))
    limit = _int(_read(cg.controller_file("memory", path, "memory.limit_in_bytes")))
    working_set = None
    if usage is not None:
        working_set = max(0, usage - mem.get("total_inactive_file", 0))
    swap_limit = None
    memsw_limit = mem.get("hierarchical_memsw_limit", _V1_UNLIMITED)
    memory_limit = mem.get("hierarchical_memory_limit", _V1_UNLIMITED)
    if memsw_limit < _V1_UNLIMITED and memory_limit < _V1_UNLIMITED:
        swap_limit = max(0, memsw_limit - memory_limit)
    return CgroupStats(
        timestamp=timestamp,
        cpu_usage_ns=cpu,
        memory_usage=usage,
        working_set=working_set,
        rss=mem.get("total_rss"),
        page_faults=mem.get("total_pgfault"),
        major_page_faults=mem.get("total_pgmajfault"),
        memory_limit=limit if limit is not None and limit < _V1_UNLIMITED else None,
        swap_usage=mem.get("total_swap"),
        swap_limit=swap_limit,
        pids=_int(_read(cg.controller_file("pids", path, "pids.current"))),
    )


def _max(text: str | None) -> int | None:
    """A v2 limit file: "max" (or absent) is unlimited."""
    return None if text in (None, "max") else _int(text)


def _read_v2(cg: Cgroupfs, path: str, timestamp: int) -> CgroupStats | None:
    cpu_stat_text = _read(cg.controller_file("cpu", path, "cpu.stat"))
    usage = _int(_read(cg.controller_file("memory", path, "memory.current")))
    if cpu_stat_text is None and usage is None:
        return None
    cpu = _keyed(cpu_stat_text)
    mem = _keyed(_read(cg.controller_file("memory", path, "memory.stat")))
    working_set = None
    if usage is not None:
        working_set = max(0, usage - mem.get("inactive_file", 0))

    return CgroupStats(
        timestamp=timestamp,
        cpu_usage_ns=cpu["usage_usec"] * 1000 if "usage_usec" in cpu else None,
        memory_usage=usage,
        working_set=working_set,
        rss=mem.get("anon"),
        page_faults=mem.get("pgfault"),
        major_page_faults=mem.get("pgmajfault"),
        memory_limit=_max(_read(cg.controller_file("memory", path, "memory.max"))),
        swap_usage=_int(_read(cg.controller_file("memory", path, "memory.swap.current"))),
        swap_limit=_max(_read(cg.controller_file("memory", path, "memory.swap.max"))),
        pids=_int(_read(cg.controller_file("pids", path, "pids.current"))),
    )


# ---- as CRI messages ----------------------------------------------------------------------


def _u64(value: int | None) -> api.UInt64Value | None:
    return None if value is None else api.UInt64Value(value=value)


def cpu_usage(figures: CgroupStats, nano_cores: int | None) -> api.CpuUsage:
    return api.CpuUsage(
        timestamp=figures.timestamp,
        usage_core_nano_seconds=_u64(figures.cpu_usage_ns),
        usage_nano_cores=_u64(nano_cores),
    )


def memory_usage(figures: CgroupStats) -> api.MemoryUsage:
    return api.MemoryUsage(
        timestamp=figures.timestamp,
        working_set_bytes=_u64(figures.working_set),
        available_bytes=_u64(figures.available),
        usage_bytes=_u64(figures.memory_usage),
        rss_bytes=_u64(figures.rss),
        page_faults=_u64(figures.page_faults),
        major_page_faults=_u64(figures.major_page_faults),
    )


def swap_usage(figures: CgroupStats) -> api.SwapUsage | None:
    if figures.swap_usage is None:
        return None
    available = None
    if figures.swap_limit is not None:
        available = max(0, figures.swap_limit - figures.swap_usage)
    return api.SwapUsage(
        timestamp=figures.timestamp,
        swap_usage_bytes=_u64(figures.swap_usage),
        swap_available_bytes=_u64(available),
    )


class CpuRates:
    """usage_nano_cores as containerd computes it: the CPU time used since the previous sample
    of the same cgroup divided by the wall time between the two samples. The first sample of a
    cgroup has no rate (None: kubelet then derives one from its own cache)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}  # key -> (timestamp ns, usage ns)

    def rate(self, key: str, timestamp: int, usage_ns: int) -> int | None:
        previous = self._last.get(key)
        self._last[key] = (timestamp, usage_ns)
        if previous is None:
            return None
        elapsed = timestamp - previous[0]
        used = usage_ns - previous[1]
        if elapsed <= 0 or used < 0:  # clock stepped back, or a new cgroup under an old key
            return None
        return used * 1_000_000_000 // elapsed

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

    def keep_only(self, keys: set[str]) -> None:
        """Drops the samples of cgroups no longer listed (removed containers and pods)."""
        for key in [k for k in self._last if k not in keys]:
            del self._last[key]

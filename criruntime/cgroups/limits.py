"""Checks on the cgroup limits a CRI caller asks for, shared by pods and containers.

A value the kernel or the OCI runtime would refuse is an INVALID_ARGUMENT naming the field when it
is asked for, not a runtime's error from deep inside `runc create` once the container starts.
"""

from __future__ import annotations

import os
import re

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument, quote

_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")  # the kernel's cpuset list format: 0-2,4
_UNITS = ("KB", "MB", "GB", "TB")
# Files a `unified` entry must never name: writing them moves processes or changes which
# controllers children get, which is the runtime's business, not a limit.
_UNIFIED_RESERVED = frozenset({"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"})


# Above any kernel's NR_CPUS (8192) and MAX_NUMNODES (1024): a bigger number is a typo or an
# attack, and refusing it keeps the check's cost independent of the range asked for.
MAX_LIST_NUMBER = 1 << 16
_MISSING_SHOWN = 8  # ranges quoted in an error; the rest is counted, never listed
_MIN_CFS_US = 1000
_MAX_CFS_PERIOD_US = 1_000_000
_MAX_CFS_QUOTA_US = (1 << 44) - 1  # the kernel's MAX_BW


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """The ranges of a kernel list ("0-2,4" -> [(0, 2), (4, 4)]); ValueError if malformed or
    past MAX_LIST_NUMBER. Never expands a range, so "0-2000000" costs what "0-2" does."""
    if not _LIST.match(text):
        raise ValueError(text)
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if low > high or high > MAX_LIST_NUMBER:
            raise ValueError(text)
        ranges.append((low, high))
    return ranges


def parse_list(text: str) -> set[int]:
    """The numbers in a kernel list ("0-2,4" -> {0, 1, 2, 4}); ValueError if malformed."""
    return {n for low, high in parse_ranges(text) for n in range(low, high + 1)}


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _missing(wanted: list[tuple[int, int]], have: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `wanted` outside `have` (both lists of ranges), as merged ranges."""
    gaps: list[tuple[int, int]] = []
    have = _merged(have)
    for low, high in _merged(wanted):
        for have_low, have_high in have:
            if have_high < low or have_low > high:
                continue
            if have_low > low:
                gaps.append((low, have_low - 1))
            low = have_high + 1
            if low > high:
                break
        if low <= high:
            gaps.append((low, high))
    return gaps


def _format(ranges: list[tuple[int, int]]) -> str:
    text = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:_MISSING_SHOWN])
    if len(ranges) > _MISSING_SHOWN:
        text += f" and {len(ranges) - _MISSING_SHOWN} more ranges"
    return text


def _online(path: str) -> list[tuple[int, int]] | None:
    try:
        with open(path) as f:
            return parse_ranges(f.read().strip())
    except (OSError, ValueError):
        return None  # nothing to check against


def _check_list(field: str, value: str, online_path: str, what: str) -> None:
    if not value:
        return
    try:
        wanted = parse_ranges(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} {quote(value)} is not a list like '0-2,4' of numbers up to {MAX_LIST_NUMBER}"
        ) from None
    online = _online(online_path)
    if online is None:
        return
    missing = _missing(wanted, online)
    if missing:
        raise InvalidArgument(f"{field} {quote(value)}: this node has no {what} {_format(missing)}")


def hugepage_sizes(root: str = "/sys/kernel/mm/hugepages") -> set[str]:
    """The host's huge page sizes as CRI names them ("2MB", "1GB"), as runc derives them."""
    sizes: set[str] = set()
    try:
        names = os.listdir(root)
    except OSError:
        return sizes
    for name in names:
        match = re.fullmatch(r"hugepages-(\d+)kB", name)
        if not match:
            continue
        size, unit = int(match.group(1)), 0
        while size >= 1024 and size % 1024 == 0 and unit < len(_UNITS) - 1:
            size, unit = size // 1024, unit + 1
        sizes.add(f"{size}{_UNITS[unit]}")
    return sizes


def check_resources(r: api.LinuxContainerResources, where: str = "resources") -> None:
    """Raises InvalidArgument for a limit no cgroup can take; 0 / "" mean unset throughout."""
    for field, value, low in (
        ("cpu_shares", r.cpu_shares, 0),
        ("cpu_period", r.cpu_period, 0),
        ("cpu_quota", r.cpu_quota, -1),  # -1: unlimited
        ("memory_limit_in_bytes", r.memory_limit_in_bytes, 0),
        ("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes, -1),  # -1: unlimited
    ):
        if value < low:
            raise InvalidArgument(f"{where}.{field} must be >= {low}, got {value}")
    # The kernel's CFS bounds (1 ms .. 1 s periods, quotas of at least 1 ms) and memsw >= mem:
    # values past them make the cgroup write fail with EINVAL, after the pod half exists.
    if r.cpu_period and not _MIN_CFS_US <= r.cpu_period <= _MAX_CFS_PERIOD_US:
        raise InvalidArgument(
            f"{where}.cpu_period must be {_MIN_CFS_US}..{_MAX_CFS_PERIOD_US} µs, got {r.cpu_period}"
        )
    if r.cpu_quota > 0 and not _MIN_CFS_US <= r.cpu_quota <= _MAX_CFS_QUOTA_US:
        raise InvalidArgument(
            f"{where}.cpu_quota must be -1 or {_MIN_CFS_US}..{_MAX_CFS_QUOTA_US} µs, "
            f"got {r.cpu_quota}"
        )
    swap, memory = r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
    if swap > 0 and (memory == 0 or swap < memory):
        raise InvalidArgument(
            f"{where}.memory_swap_limit_in_bytes ({swap}) must be at least "
            f"memory_limit_in_bytes ({memory}), which must be set with it"
        )
    _check_list(f"{where}.cpuset_cpus", r.cpuset_cpus, "/sys/devices/system/cpu/online", "CPU")
    _check_list(
        f"{where}.cpuset_mems", r.cpuset_mems, "/sys/devices/system/node/online", "memory node"
    )
    if r.hugepage_limits:
        sizes = hugepage_sizes()
        for limit in r.hugepage_limits:
            if limit.page_size not in sizes:
                have = ", ".join(sorted(sizes)) or "none"
                raise InvalidArgument(
                    f"{where}.hugepage_limits: page size {limit.page_size!r} is not one this "
                    f"node has ({have})"
                )
    for key in r.unified:
        if "/" in key or key.startswith(".") or "." not in key or key in _UNIFIED_RESERVED:
            raise InvalidArgument(
                f"{where}.unified key {key!r} must be a cgroup interface file name like "
                f"'memory.high'"
            )

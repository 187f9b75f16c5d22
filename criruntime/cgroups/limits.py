"""Checks on the cgroup limits a CRI caller asks for, shared by pods and containers.

A value the kernel or the OCI runtime would refuse is an INVALID_ARGUMENT naming the field when it
is asked for, not a runtime's error from deep inside `runc create` once the container starts.
"""

from __future__ import annotations

import os
import re

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument

_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")  # the kernel's cpuset list format: 0-2,4
_UNITS = ("KB", "MB", "GB", "TB")
# Files a `unified` entry must never name: writing them moves processes or changes which
# controllers children get, which is the runtime's business, not a limit.
_UNIFIED_RESERVED = frozenset({"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"})


def parse_list(text: str) -> set[int]:
    """The numbers in a kernel list ("0-2,4" -> {0, 1, 2, 4}); ValueError if malformed."""
    if not _LIST.match(text):
        raise ValueError(text)
    numbers: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if low > high:
            raise ValueError(text)
        numbers.update(range(low, high + 1))
    return numbers


def _online(path: str) -> set[int] | None:
    try:
        with open(path) as f:
            return parse_list(f.read().strip())
    except (OSError, ValueError):
        return None  # nothing to check against


def _check_list(field: str, value: str, online_path: str, what: str) -> None:
    if not value:
        return
    try:
        wanted = parse_list(value)
    except ValueError:
        raise InvalidArgument(f"{field} {value!r} is not a list like '0-2,4'") from None
    online = _online(online_path)
    if online is not None and not wanted <= online:
        missing = ",".join(str(n) for n in sorted(wanted - online))
        raise InvalidArgument(f"{field} {value!r}: this node has no {what} {missing}")


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

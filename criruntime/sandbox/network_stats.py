"""Per-interface rx/tx bytes and errors of a pod's network namespace.

/proc/<pid>/net/dev shows the network namespace of process <pid>, so a process running in the
pod (a container's init) gives the figures with one read and no namespace switch. A pod with no
such process is read by a short-lived thread that setns()es into the pinned netns file and reads
/proc/thread-self/net/dev, then dies: no thread the daemon's other tasks share ever leaves the
host's namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from criruntime.native import linux
from criruntime.sandbox.namespaces import run_in_thread


@dataclass(frozen=True)
class InterfaceStats:
    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int


def parse_net_dev(text: str) -> list[InterfaceStats]:
    """/proc/net/dev: two header lines, then "name: rx bytes packets errs drop fifo frame
    compressed multicast tx bytes packets errs ...". The loopback is left out, as cAdvisor does."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        name = name.strip()
        if not sep or len(fields) < 11 or name == "lo":
            continue
        out.append(
            InterfaceStats(
                name=name,
                rx_bytes=int(fields[0]),
                rx_errors=int(fields[2]),
                tx_bytes=int(fields[8]),
                tx_errors=int(fields[10]),
            )
        )
    return out


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def read_pod_interfaces(netns_path: str, pids: list[int]) -> list[InterfaceStats] | None:
    """The pod's interfaces, through one of `pids` when one still lives in the pod's netns, else
    by entering the netns on a thread of its own; None when the netns is gone. Blocking."""
    netns = _netns_inode(netns_path)
    if netns is None:
        return None
    for pid in pids:
        # The pid must still be in the pod's netns (not exited, its number not reused).
        if _netns_inode(f"/proc/{pid}/ns/net") == netns:
            try:
                return parse_net_dev(_read(f"/proc/{pid}/net/dev"))
            except OSError:
                continue

    def inside() -> list[InterfaceStats]:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(fd, linux.CLONE_NEWNET)
        finally:
            os.close(fd)
        return parse_net_dev(_read("/proc/thread-self/net/dev"))

    try:
        return run_in_thread(inside)
    except OSError:
        return None

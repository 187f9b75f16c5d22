"""sysctl writes through /proc/sys.

/proc/sys/net resolves against the *calling thread's* netns, so these work
inside cni._ns.run_in_netns as well as in the host netns.
"""

from __future__ import annotations


def sysctl_path(key: str) -> str:
    # Keys use "/" separators ("net/ipv4/conf/eth0/arp_notify"): interface
    # names may contain dots, so dotted keys would be ambiguous.
    return "/proc/sys/" + key


def read_sysctl(key: str) -> str:
    with open(sysctl_path(key)) as f:
        return f.read().strip()


def write_sysctl(key: str, value: str) -> None:
    """Write only when different: avoids needless writes and EPERM on read-only /proc."""
    path = sysctl_path(key)
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(value)


def try_write_sysctl(key: str, value: str) -> bool:
    """Best effort, like the reference plugins' `_, _ = sysctl.Sysctl(...)`."""
    try:
        write_sysctl(key, value)
    except OSError:
        return False
    return True

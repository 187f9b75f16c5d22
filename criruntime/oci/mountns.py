"""A private mount namespace for an OCI runtime that the host's mount table would mislead.

crun 1.8 refuses a hybrid cgroup host ("cgroups in hybrid mode not supported"): here the
unified hierarchy is mounted at /sys/fs/cgroup/unified next to the v1 hierarchies, holding no
controller but hugetlb. In a mount namespace where that one mount is gone, crun sees a pure v1
host and applies v1 cgroups as runc does, while the host keeps its mount.

The namespace is prepared once at start-up by a short-lived child (util-linux `unshare`), which
makes /sys/fs/cgroup a slave there (so nothing it unmounts reaches the host) and unmounts the
hidden mounts. The daemon keeps the namespace alive with an fd on it, never enters it itself,
and runs the runtime's children in it through `nsenter --mount=/proc/<daemon>/fd/<fd>`; conmon
started that way runs `crun create` there too, and keeps the namespace alive for as long as its
container runs, after the daemon is gone.

How mounts reach containers from there (every mount on these hosts is private, so a namespace
copied once would never see the mounts the daemon makes later):
- The daemon's state dir, which holds every mount it makes for pods and containers (overlay
  rootfs under containers/<id>/rootfs, the pod's pinned namespace files and /dev/shm under
  sandboxes/<id>/), is made a shared mount before the namespace is copied (a bind on itself
  when it is not a mount point yet, as `ip netns` does for /run/netns). Its copy in the
  namespace is a peer, so mounts and unmounts made there on the host appear in it at once.
- Volumes and other host paths outside the state dir (a kubelet tmpfs may be mounted there
  after the namespace was made) are bound recursively, on the host, under the container's
  bundle at create (stage_binds); the spec names those binds, which reach the namespace as
  above. A bind of a shared host mount joins its peer group, so `HostToContainer` (rslave)
  sees mounts made later below the host path and `Bidirectional` (rshared) sends the
  container's mounts back to it, as with runc; on a private host path neither runtime
  propagates anything to the host path. The binds go at reap, before any dir is deleted.
- Nothing is mounted in the namespace by the daemon; crun mounts only inside the container's
  own namespace. The host keeps its cgroup mounts; at a clean stop the state dir's bind is
  undone when nothing is mounted under it any more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from criruntime.errors import FailedPrecondition
from criruntime.native import linux

log = logging.getLogger("criruntime.oci")

CGROUP_ROOT = "/sys/fs/cgroup"
_PREPARE_TIMEOUT = 10.0
# The marker left in a dir this module bound onto itself, so a later daemon (after a kill -9)
# knows the bind is its to undo.
BIND_MARKER = ".criruntime-shared"


@dataclass(frozen=True)
class Mount:
    mount_point: str
    root: str
    fstype: str
    shared: bool
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    mounts = []
    with open(path) as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, after = head.split(), tail.split()
            if len(fields) < 6 or len(after) < 3:
                continue
            mounts.append(
                Mount(
                    mount_point=_unescape(fields[4]),
                    root=_unescape(fields[3]),
                    fstype=after[0],
                    shared=any(f.startswith("shared:") for f in fields[6:]),
                    super_options=tuple(after[2].split(",")),
                )
            )
    return mounts


def hidden_mounts(mounts: list[Mount]) -> list[str]:
    """What a runtime must not see on this host: a cgroup2 hierarchy mounted below
    /sys/fs/cgroup next to v1 hierarchies (the hybrid layout). Empty on a pure v1 or v2 host."""
    v1 = any(m.fstype == "cgroup" for m in mounts)
    return [
        m.mount_point
        for m in mounts
        if v1 and m.fstype == "cgroup2" and os.path.dirname(m.mount_point) == CGROUP_ROOT
    ]


def v1_controllers(mounts: list[Mount]) -> frozenset[str]:
    """The v1 controllers mounted (so usable by a runtime) in a mount table."""
    names: set[str] = set()
    for m in mounts:
        if m.fstype == "cgroup":
            names.update(o for o in m.super_options if o not in ("rw", "ro") and "=" not in o)
    return frozenset(names)


def _mount_at(mounts: list[Mount], path: str) -> Mount | None:
    found = [m for m in mounts if m.mount_point == path]
    return found[-1] if found else None  # the last one is the top of a stack


def share_dir(path: str) -> None:
    """Makes `path` a shared mount, binding it onto itself first if it is not a mount point."""
    mount = _mount_at(read_mounts(), path)
    if mount is None:
        linux.bind_mount(path, path)
        mount = _mount_at(read_mounts(), path)
        with open(os.path.join(path, BIND_MARKER), "w") as f:
            f.write(mount.root if mount else "")
    if mount is None or not mount.shared:
        linux.make_shared(path)


def unshare_dir(path: str) -> None:
    """Undoes share_dir's bind when it made one and nothing is mounted under it any more (a
    pod or container left running keeps it, for the next daemon). Files still open there (a
    lock, the socket) stay valid: the bind shows the same directory."""
    mounts = read_mounts()
    mount = _mount_at(mounts, path)
    marker = os.path.join(path, BIND_MARKER)
    try:
        with open(marker) as f:
            ours = mount is not None and f.read() == mount.root
    except FileNotFoundError:
        return
    if not ours or any(m.mount_point.startswith(path + "/") for m in mounts):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker)
    with contextlib.suppress(OSError):
        linux.umount(path, detach=True)


def stage_binds(mounts: list[dict[str, Any]], shared_dir: str, staging_dir: str) -> None:
    """Points the spec's bind mounts from outside `shared_dir` at binds of their sources under
    `staging_dir` (itself under `shared_dir`), made here on the host: so the runtime, in its
    namespace, sees each host path as it is now, with the mounts below it, however late they
    were made. The binds are recursive, so what propagates into a source propagates on."""
    for index, mount in enumerate(mounts):
        source = str(mount.get("source", ""))
        if mount.get("type") != "bind" or not source.startswith("/"):
            continue
        if source == shared_dir or source.startswith(shared_dir + "/"):
            continue  # already reaches the namespace
        target = os.path.join(staging_dir, str(index))
        os.makedirs(staging_dir, mode=0o700, exist_ok=True)
        if os.path.isdir(source):
            os.mkdir(target, 0o700)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        linux.rbind_mount(source, target)
        mount["source"] = target


def release_binds(staging_dir: str) -> None:
    """Undoes stage_binds (each bind with all below it); nothing staged is fine."""
    try:
        names = os.listdir(staging_dir)
    except FileNotFoundError:
        return
    for name in names:
        target = os.path.join(staging_dir, name)
        while _is_mount_point(target):
            try:
                linux.umount(target, detach=True)
            except OSError:
                break


def _is_mount_point(path: str) -> bool:
    # os.path.ismount misses a bind from the same filesystem; a file bind has no parent dir
    # semantics either. The mount table says it for both.
    return any(m.mount_point == path for m in read_mounts())


# The child that makes the namespace: it reports, then waits for stdin to close, so that the
# daemon can open its namespace before it exits. `umount` of a slave never reaches the host.
_SETUP = """set -e
mount --make-rslave {cgroup_root}
for m in "$@"; do umount "$m"; done
echo ready
exec cat >/dev/null
"""


class PrivateMountNamespace:
    """The prepared namespace, held open by the daemon for the children it starts there."""

    def __init__(
        self, fd: int, hidden: list[str], controllers: frozenset[str], shared_dir: str
    ) -> None:
        self._fd = fd
        self.hidden = hidden
        self.controllers = controllers
        self.shared_dir = shared_dir
        nsenter = shutil.which("nsenter")
        if nsenter is None:
            raise FailedPrecondition("nsenter (util-linux) is not installed")
        self.enter = [nsenter, f"--mount=/proc/{os.getpid()}/fd/{fd}", "--"]

    @classmethod
    def prepare(cls, hidden: list[str], shared_dir: str) -> PrivateMountNamespace:
        """Makes the namespace (in a child, never in the daemon), hiding `hidden` there."""
        os.makedirs(shared_dir, exist_ok=True)
        share_dir(shared_dir)
        argv = [
            "unshare", "--mount", "--propagation", "unchanged", "--",
            "sh", "-c", _SETUP.format(cgroup_root=CGROUP_ROOT), "sh", *hidden,
        ]  # fmt: skip
        child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            line = child.stdout.readline()
            if line.strip() != b"ready":
                child.stdin.close()
                _, err = child.communicate(timeout=_PREPARE_TIMEOUT)
                raise FailedPrecondition(
                    f"cannot prepare the OCI runtime's mount namespace: "
                    f"{err.decode(errors='replace').strip() or 'no output'}"
                )
            fd = os.open(f"/proc/{child.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            controllers = v1_controllers(read_mounts(f"/proc/{child.pid}/mountinfo"))
        finally:
            if not child.stdin.closed:
                child.stdin.close()
            try:
                child.wait(_PREPARE_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        log.info(
            "OCI runtime mount namespace ready: %s hidden, %s shared",
            ", ".join(hidden) or "nothing",
            shared_dir,
        )
        return cls(fd, hidden, controllers, shared_dir)

    def describe(self) -> str:
        return f"private mount namespace without {', '.join(self.hidden)}"

    def close(self) -> None:
        """Lets go of the namespace (conmons still in it keep it) and undoes the state dir's
        bind when nothing is mounted under it any more."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            unshare_dir(self.shared_dir)

"""Pinned pod namespaces, as CRI-O's pinns makes them, without forking the daemon.

unshare(2) of the network, IPC and UTS namespaces (and the PID namespace for children) changes
only the calling thread. So a short-lived thread unshares, sets the hostname, brings up `lo`,
bind-mounts /proc/thread-self/ns/* onto files under the pod's dir, starts the pod's PID-namespace
init if asked, and exits; the daemon's other threads never leave the host's namespaces. This costs
about 0.2 ms, against ~3 ms for fork+exec of util-linux `unshare --net=FILE ...` (bench/sandbox.py).

Sysctls are written the same way: a thread setns()es into the pod's namespaces and writes
/proc/sys, which resolves net.* and IPC entries against the writing thread's namespaces.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from criruntime.errors import InvalidArgument
from criruntime.native import linux
from criruntime.oci.idmap import UserNamespaceMappings
from criruntime.sandbox import user_namespace

T = TypeVar("T")

SHM_SIZE = 64 * 1024 * 1024
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

# A Python init for hosts without catatonit: PID 1 of the pod, reaping orphans until SIGTERM.
_PY_INIT = (
    "import os,signal\n"
    "signal.signal(signal.SIGTERM,lambda*a:os._exit(0))\n"
    "signal.signal(signal.SIGINT,lambda*a:os._exit(0))\n"
    "while True:\n"
    " try: os.wait()\n"
    " except ChildProcessError: signal.pause()\n"
)


# The one variable in a pod init's environment: the pod it belongs to.
_OWNER_ENV = "CRIRUNTIME_SANDBOX"


def init_command() -> list[str]:
    """catatonit in pause mode (podman's pod init, ~100 KB RSS), else a tiny Python reaper."""
    catatonit = shutil.which("catatonit")
    if catatonit:
        return [catatonit, "-P"]
    return [sys.executable, "-S", "-I", "-c", _PY_INIT]


@dataclass(frozen=True)
class PinnedNamespaces:
    net: str = ""
    ipc: str = ""
    uts: str = ""
    pid: str = ""
    init_pid: int = 0
    user: str = ""  # the pod's own user namespace, which owns the others; "" for the host's


def run_in_thread(fn: Callable[[], T]) -> T:
    """Runs fn on a fresh OS thread that dies afterwards, so namespace changes die with it."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # re-raised in the caller
            error.append(e)

    t = threading.Thread(target=target, name="netns-worker")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, _SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _pin(source: str, target: str) -> None:
    with open(target, "x"):
        pass
    try:
        linux.bind_mount(source, target)
    except BaseException:
        os.unlink(target)
        raise


def _umount_if_mounted(path: str) -> None:
    """Unmounts path; not mounted (EINVAL) or gone (ENOENT) is fine, so teardown can repeat."""
    try:
        linux.umount(path)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def unpin(path: str) -> None:
    """Unmounts and deletes a pinned namespace file; a file already gone is fine."""
    if not path:
        return
    _umount_if_mounted(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def create(
    ns_dir: str,
    *,
    net: bool,
    ipc: bool,
    uts: bool,
    pid: bool,
    hostname: str,
    init_cgroup: Callable[[int], None] | None = None,
    owner: str = "",
    userns: UserNamespaceMappings | None = None,
) -> PinnedNamespaces:
    """Creates and pins the requested namespaces under ns_dir (blocking; call from a thread
    pool or the event loop's executor). On failure nothing is left pinned. A PID namespace's
    init carries `owner` (the pod's id) in its environment, so it can be found without its pid.
    With `userns`, a new user namespace with those mappings owns them all."""
    os.makedirs(ns_dir, mode=0o700, exist_ok=True)
    flags = (
        (linux.CLONE_NEWNET if net else 0)
        | (linux.CLONE_NEWIPC if ipc else 0)
        | (linux.CLONE_NEWUTS if uts else 0)
        | (linux.CLONE_NEWPID if pid else 0)
    )
    if userns is not None:
        return _create_in_userns(ns_dir, userns, flags, hostname, init_cgroup, owner)

    def work() -> PinnedNamespaces:
        pinned: list[str] = []
        init: subprocess.Popen[bytes] | None = None
        try:
            linux.unshare(flags)
            if uts and hostname:
                linux.sethostname(hostname)
            if net:
                _loopback_up()
            out: dict[str, str] = {}
            for kind, wanted in (("net", net), ("ipc", ipc), ("uts", uts)):
                if wanted:
                    path = os.path.join(ns_dir, kind)
                    _pin(f"/proc/thread-self/ns/{kind}", path)
                    pinned.append(path)
                    out[kind] = path
            init_pid = 0
            if pid:
                # Children of this thread are born in the new PID namespace: the init is PID 1.
                init = subprocess.Popen(
                    init_command(),
                    env={_OWNER_ENV: owner},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    close_fds=True,
                )
                init_pid = init.pid
                if init_cgroup is not None:
                    init_cgroup(init_pid)
                path = os.path.join(ns_dir, "pid")
                _pin(f"/proc/{init_pid}/ns/pid", path)
                pinned.append(path)
                out["pid"] = path
                # The Popen object is dropped; the init is reaped in stop_init().
                init.returncode = 0  # keep Popen.__del__ from tracking it as a zombie
            return PinnedNamespaces(**out, init_pid=init_pid)
        except BaseException:
            if init is not None:
                with contextlib.suppress(ProcessLookupError):
                    init.kill()
                    init.wait()
            for path in pinned:
                unpin(path)
            raise

    return run_in_thread(work)


def _create_in_userns(
    ns_dir: str,
    mappings: UserNamespaceMappings,
    flags: int,
    hostname: str,
    init_cgroup: Callable[[int], None] | None,
    owner: str,
) -> PinnedNamespaces:
    """As `create`, through the user-namespace helper (user_namespace.py)."""
    kinds = ["user"] + [
        kind
        for kind, flag in (
            ("net", linux.CLONE_NEWNET),
            ("ipc", linux.CLONE_NEWIPC),
            ("uts", linux.CLONE_NEWUTS),
            ("pid", linux.CLONE_NEWPID),
        )
        if flags & flag
    ]
    init_argv = init_command() if flags & linux.CLONE_NEWPID else []
    pinned: dict[str, str] = {}
    init_pid = 0
    try:
        with user_namespace.helper_namespaces(
            mappings, flags, hostname, init_argv, {_OWNER_ENV: owner}
        ) as made:
            init_pid = made.init_pid
            if init_pid and init_cgroup is not None:
                init_cgroup(init_pid)
            for kind in kinds:
                holder = init_pid if kind == "pid" else made.helper_pid
                path = os.path.join(ns_dir, kind)
                _pin(f"/proc/{holder}/ns/{kind}", path)
                pinned[kind] = path
        return PinnedNamespaces(**pinned, init_pid=init_pid)
    except BaseException:
        stop_init(init_pid)
        for path in pinned.values():
            unpin(path)
        raise


def stop_init(pid: int, timeout: float = 2.0) -> None:
    """Stops the pod's PID-namespace init (SIGKILL takes down every process in the namespace)
    and reaps it when it is our child."""
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (daemon restarted): init reaps it
            if not os.path.exists(f"/proc/{pid}"):
                return
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
            time.sleep(0.005)
            continue
        if done:
            return
        time.sleep(0.002)


def owned_inits(owner: str) -> list[int]:
    """The pod inits started for `owner`, found by their environment: a daemon killed between
    starting one and recording its pid has no other way to it."""
    if not owner:
        return []
    marker = f"{_OWNER_ENV}={owner}\0".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if f.read() == marker:
                        found.append(int(name))
            except OSError:
                continue  # exited meanwhile, or a kernel thread
    return found


def is_pinned(path: str) -> bool:
    return bool(path) and os.path.ismount(path)


# ---- /dev/shm ----------------------------------------------------------------------------


def mount_shm(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)
    linux.mount(
        "shm",
        path,
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
        f"mode=1777,size={SHM_SIZE}",
    )


def unmount_shm(path: str | None) -> None:
    if path:
        _umount_if_mounted(path)


# ---- sysctls -----------------------------------------------------------------------------

_IPC_SYSCTLS = {
    "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni",
}  # fmt: skip
_UTS_SYSCTLS = {"kernel.hostname", "kernel.domainname"}


def normalize_sysctl(name: str) -> str:
    """ "net/ipv4/ip_forward" and "net.ipv4.ip_forward" are the same sysctl (kubelet accepts
    both); a slash form keeps dots in interface names ("net/ipv4/conf/eth0.100/...")."""
    if "/" in name:
        return name.replace(".", "\0").replace("/", ".").replace("\0", "/")
    return name


def sysctl_namespace(name: str) -> str | None:
    """The namespace a sysctl belongs to ("net", "ipc", "uts"), or None if it is node-wide."""
    if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
        return "ipc"
    if name in _UTS_SYSCTLS:
        return "uts"
    if name.startswith("net."):
        return "net"
    return None


def validate_sysctls(sysctls: dict[str, str], *, net: bool, ipc: bool, uts: bool) -> None:
    private = {"net": net, "ipc": ipc, "uts": uts}
    for raw in sorted(sysctls):
        name = normalize_sysctl(raw)
        if ".." in name or name.startswith(".") or "\0" in name:
            raise InvalidArgument(f"sysctl {raw!r}: invalid name")
        kind = sysctl_namespace(name)
        if kind is None:
            raise InvalidArgument(
                f"sysctl {raw!r} is not namespaced: it would change the whole node; refused"
            )
        if not private[kind]:
            raise InvalidArgument(
                f"sysctl {raw!r} needs a private {kind} namespace, but the pod uses the node's"
            )


def apply_sysctls(sysctls: dict[str, str], ns: PinnedNamespaces) -> None:
    """Writes each sysctl from inside the pod's namespaces (blocking)."""
    if not sysctls:
        return

    def work() -> None:
        for kind, path, flag in (
            ("net", ns.net, linux.CLONE_NEWNET),
            ("ipc", ns.ipc, linux.CLONE_NEWIPC),
            ("uts", ns.uts, linux.CLONE_NEWUTS),
        ):
            if path:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    linux.setns(fd, flag)
                finally:
                    os.close(fd)
            del kind
        for raw, value in sorted(sysctls.items()):
            name = normalize_sysctl(raw)
            proc = "/proc/sys/" + name.replace(".", "/")
            try:
                with open(proc, "w") as f:
                    f.write(value)
            except OSError as e:
                raise InvalidArgument(
                    f"sysctl {raw}={value!r} cannot be set: {e.strerror}"
                ) from None

    run_in_thread(work)

"""ContainerSpecBuilder: CRI ContainerConfig + pod + image config → OCI runtime config.json.

Follows containerd's CRI plugin where CRI leaves room: command replaces ENTRYPOINT and drops
CMD, args replace CMD; env is image env overlaid by the request; the default capability set
is Docker's; masked and read-only paths are the ones kubelet sends (defaults when none).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.host import HostCgroups
from criruntime.container.providers import ImageConfig, PodInfo
from criruntime.container.seccomp_profile import read_profile
from criruntime.container.user import ResolvedUser
from criruntime.errors import InvalidArgument, quote
from criruntime.oci import idmap

log = logging.getLogger("criruntime.container.spec")

OCI_VERSION = "1.0.2"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECCOMP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp")
DEFAULT_SECCOMP_PROFILE = os.path.join(SECCOMP_DIR, "default.json")

# Docker's / containerd's default capability set.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

# Every capability by number (capability.h); trimmed to the kernel's cap_last_cap.
ALL_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip

DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
DEFAULT_READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]  # fmt: skip

_PROPAGATION = {
    api.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}


def _bounding_set() -> int:
    """The daemon's own capability bounding set; all bits when it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return (1 << len(ALL_CAPABILITIES)) - 1


@functools.cache
def all_capabilities() -> list[str]:
    """ "ALL" for privileged containers and add ALL: what the kernel knows *and* the daemon
    holds, as containerd's cap.Current(). Asking runc for a capability outside the daemon's
    bounding set fails the whole create (this VM drops CAP_SYS_RESOURCE)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = len(ALL_CAPABILITIES) - 1
    held = _bounding_set()
    return [cap for bit, cap in enumerate(ALL_CAPABILITIES[: last + 1]) if held >> bit & 1]


@functools.cache
def negative_oom_score_adj_allowed() -> bool:
    """Some hosts (ours: a VM sandbox) deny negative oom_score_adj even to root; runc would fail
    the whole create, so we probe once in a throwaway child and clamp when it is denied."""
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", "echo -1 > /proc/self/oom_score_adj"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


@functools.cache
def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def normalize_capability(name: str) -> str:
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in ALL_CAPABILITIES:
        raise InvalidArgument(f"unknown capability {name!r}")
    return full


def capabilities_for(security: api.LinuxContainerSecurityContext) -> list[str]:
    if security.privileged:
        return list(all_capabilities())
    caps = security.capabilities
    add = [normalize_capability(c) for c in caps.add_capabilities]
    drop = [normalize_capability(c) for c in caps.drop_capabilities]
    current = list(DEFAULT_CAPABILITIES)
    if "ALL" in drop:
        current = []
    if "ALL" in add:
        current = list(all_capabilities())
    held = all_capabilities()
    for cap in add:
        if cap != "ALL" and cap not in held:
            # runc would fail the start with its own words; say it at create.
            raise InvalidArgument(
                f"capability {cap} is outside this node's capability bounding set, so no "
                "container here can have it"
            )
        if cap != "ALL" and cap not in current:
            current.append(cap)
    return [c for c in current if c not in drop and c in held]


def resources_to_oci(
    asked: api.LinuxContainerResources, host: HostCgroups, warnings: list[str]
) -> dict[str, Any]:
    """CRI LinuxContainerResources → OCI linux.resources (also used by `runc update`), without
    what the host cannot enforce (see cgroups/host.py)."""
    resources = host.fit(asked, "linux.resources", warnings)
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if resources.cpu_shares:
        cpu["shares"] = resources.cpu_shares
    if resources.cpu_quota:
        cpu["quota"] = resources.cpu_quota
    if resources.cpu_period:
        cpu["period"] = resources.cpu_period
    if resources.cpuset_cpus:
        cpu["cpus"] = resources.cpuset_cpus
    if resources.cpuset_mems:
        cpu["mems"] = resources.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if resources.memory_limit_in_bytes:
        memory["limit"] = resources.memory_limit_in_bytes
    if resources.memory_swap_limit_in_bytes:
        memory["swap"] = resources.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    if resources.hugepage_limits:
        out["hugepageLimits"] = [
            {"pageSize": h.page_size, "limit": h.limit} for h in resources.hugepage_limits
        ]
    if resources.unified:
        out["unified"] = dict(resources.unified)
    return out


def clamp_oom_score_adj(value: int, warnings: list[str]) -> int:
    if value < 0 and not negative_oom_score_adj_allowed():
        warnings.append(f"oom_score_adj {value} clamped to 0: this host denies negative values")
        return 0
    return max(-1000, min(1000, value))


@dataclass
class SpecInputs:
    container_id: str
    config: api.ContainerConfig
    pod: PodInfo
    image: ImageConfig
    rootfs: str
    user: ResolvedUser
    host_cgroups: HostCgroups
    recursive_read_only_supported: bool = False
    cgroup_root: str = "/criruntime"
    target_pid: int = 0  # for NamespaceMode.TARGET: the target container's init pid
    image_volumes: dict[str, str] = field(default_factory=dict)  # container path → mounted image


@dataclass
class BuiltSpec:
    spec: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class ContainerSpecBuilder:
    """Builds the OCI spec step by step; each step owns one section of config.json."""

    def __init__(self, inputs: SpecInputs) -> None:
        self.i = inputs
        self.config = inputs.config
        self.security = inputs.config.linux.security_context
        self.warnings: list[str] = []

    def build(self) -> BuiltSpec:
        spec: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "process": self._process(),
            "root": {"path": self.i.rootfs, "readonly": bool(self.security.readonly_rootfs)},
            "mounts": self._mounts(),
            "annotations": dict(self.config.annotations),
            "linux": self._linux(),
        }
        hostname = self.i.pod.hostname or self.i.pod.config.hostname
        if self.i.pod.uts_ns_path is not None and hostname:
            spec["hostname"] = hostname
        return BuiltSpec(spec=spec, warnings=self.warnings)

    # ---- process -------------------------------------------------------------------------------

    def args(self) -> list[str]:
        image = self.i.image
        if self.config.command:
            args = [*self.config.command, *self.config.args]
        else:
            args = [*image.entrypoint, *(self.config.args or image.cmd)]
        if not args:
            raise InvalidArgument(
                "no command specified: the request has no command or args and the image "
                "has no ENTRYPOINT or CMD"
            )
        return args

    def env(self) -> list[str]:
        merged: dict[str, str] = {}
        for item in self.i.image.env:
            key, _, value = item.partition("=")
            merged[key] = value
        for kv in self.config.envs:
            if not kv.key or "=" in kv.key:
                raise InvalidArgument(f"environment variable name {kv.key!r} is not valid")
            merged[kv.key] = kv.value
        merged.setdefault("PATH", DEFAULT_PATH_ENV.partition("=")[2])
        hostname = self.i.pod.hostname or self.i.pod.config.hostname
        if hostname:
            merged.setdefault("HOSTNAME", hostname)
        merged.setdefault("HOME", self.i.user.home or "/")
        return [f"{k}={v}" for k, v in merged.items()]

    def _process(self) -> dict[str, Any]:
        caps = capabilities_for(self.security)
        user = self.i.user
        process: dict[str, Any] = {
            "terminal": bool(self.config.tty),
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": self.args(),
            "env": self.env(),
            "cwd": self._cwd(),
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": bool(self.security.no_new_privs),
        }
        ambient = [
            normalize_capability(c) for c in self.security.capabilities.add_ambient_capabilities
        ]
        if ambient:
            process["capabilities"]["ambient"] = ambient
            process["capabilities"]["inheritable"] = ambient
        resources = self.config.linux.resources
        if resources.oom_score_adj:
            process["oomScoreAdj"] = clamp_oom_score_adj(resources.oom_score_adj, self.warnings)
        apparmor = self._apparmor()
        if apparmor:
            process["apparmorProfile"] = apparmor
        return process

    def _cwd(self) -> str:
        cwd = self.config.working_dir or self.i.image.working_dir or "/"
        if not cwd.startswith("/"):
            raise InvalidArgument(f"working_dir must be an absolute path, got {cwd!r}")
        return cwd

    def _apparmor(self) -> str:
        if self.security.privileged or not apparmor_enabled():
            return ""  # AppArmor is ignored on hosts without it
        profile = self.security.apparmor
        if profile.profile_type == api.SecurityProfile.ProfileType.Localhost:
            return profile.localhost_ref.removeprefix("localhost/")
        return ""

    # ---- mounts --------------------------------------------------------------------------------

    def _mounts(self) -> list[dict[str, Any]]:
        privileged = self.security.privileged
        readonly_rootfs = self.security.readonly_rootfs
        sys_options = ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime",
                         "rw" if privileged else "ro"]},
        ]  # fmt: skip
        pod = self.i.pod
        pod_files = [
            ("/etc/hostname", pod.hostname_path),
            ("/etc/hosts", pod.hosts_path),
            ("/etc/resolv.conf", pod.resolv_conf_path),
        ]
        for destination, source in pod_files:
            if source:
                mode = "ro" if readonly_rootfs else "rw"
                mounts.append(_bind(destination, source, ["rbind", "rprivate", mode]))
        if pod.shm_path:
            mounts.append(_bind("/dev/shm", pod.shm_path, ["rbind", "rprivate", "rw"]))
        else:
            mounts.append(
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}
            )  # fmt: skip
        user_mounts = [self._cri_mount(m) for m in self.config.mounts]
        taken = {os.path.normpath(m["destination"]) for m in user_mounts}
        mounts = [m for m in mounts if os.path.normpath(m["destination"]) not in taken]
        # Parents before children, so a mount at /a/b is not hidden by a later mount at /a.
        user_mounts.sort(key=lambda m: os.path.normpath(m["destination"]).count("/"))
        return mounts + user_mounts

    def _cri_mount(self, mount: api.Mount) -> dict[str, Any]:
        if not mount.container_path or not os.path.isabs(mount.container_path):
            raise InvalidArgument(
                f"mount container_path must be an absolute path, got {mount.container_path!r}"
            )
        if mount.uidMappings or mount.gidMappings:
            # Every volume of a pod with a user namespace, image volumes too, is idmapped
            # through it (idmapped.py); other mappings would need a namespace of their own.
            asked = (tuple(map(_idmap, mount.uidMappings)), tuple(map(_idmap, mount.gidMappings)))
            userns = self.i.pod.userns
            if userns is None or asked != (userns.uids, userns.gids):
                raise InvalidArgument(
                    f"mount {mount.container_path}: uid/gid mappings must be those of the "
                    "pod's user namespace"
                )
        if mount.HasField("image"):
            source = self.i.image_volumes.get(os.path.normpath(mount.container_path))
            if source is None:
                raise InvalidArgument(f"mount {mount.container_path}: image volume not mounted")
            # Read-only and noexec, as KEP-4639 has it: the image's files are data, not programs.
            options = ["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"]
            return _bind(mount.container_path, source, options)
        if not mount.host_path or not os.path.isabs(mount.host_path):
            raise InvalidArgument(
                f"mount host_path must be an absolute path, got {mount.host_path!r}"
            )
        source = os.path.realpath(mount.host_path)  # kubelet may hand us symlinks
        if not os.path.exists(source):
            # containerd creates a missing host path as a directory, as docker -v does.
            try:
                os.makedirs(source, mode=0o755, exist_ok=True)
            except OSError as e:
                raise InvalidArgument(
                    f"mount host_path {mount.host_path!r} cannot be created: {e.strerror}"
                ) from None
        propagation = _PROPAGATION.get(mount.propagation)
        if propagation is None:
            raise InvalidArgument(f"unknown mount propagation {mount.propagation}")
        options = ["rbind", propagation, "ro" if mount.readonly else "rw"]
        if mount.recursive_read_only:
            if not mount.readonly:
                raise InvalidArgument(
                    f"mount {mount.container_path}: recursive_read_only requires readonly"
                )
            if propagation != "rprivate":
                raise InvalidArgument(
                    f"mount {mount.container_path}: recursive_read_only requires private "
                    "propagation"
                )
            if not self.i.recursive_read_only_supported:
                raise InvalidArgument(
                    f"mount {mount.container_path}: recursive read-only mounts are not "
                    "supported by this runtime handler"
                )
            options.append("rro")
        return _bind(mount.container_path, source, options)

    # ---- linux ---------------------------------------------------------------------------------

    def _linux(self) -> dict[str, Any]:
        privileged = self.security.privileged
        resources = resources_to_oci(
            self.config.linux.resources, self.i.host_cgroups, self.warnings
        )
        devices, device_rules = self._devices()
        resources["devices"] = device_rules
        cgroup_parent = self.i.pod.cgroup_parent or self.i.cgroup_root
        linux: dict[str, Any] = {
            **(self.i.pod.userns.to_oci() if self.i.pod.userns is not None else {}),
            "namespaces": self._namespaces(),
            "resources": resources,
            "cgroupsPath": os.path.join(cgroup_parent, self.i.container_id),
            "devices": devices,
            "sysctl": dict(self.i.pod.config.linux.sysctls),
        }
        # The per-mount option alone only makes a peer group inside the container; the rootfs
        # propagation decides whether mounts cross back to the host (containerd does the same).
        props = {m.propagation for m in self.config.mounts}
        if api.MountPropagation.PROPAGATION_BIDIRECTIONAL in props:
            linux["rootfsPropagation"] = "rshared"
        elif api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER in props:
            linux["rootfsPropagation"] = "rslave"
        if not privileged:
            masked = list(self.security.masked_paths) or DEFAULT_MASKED_PATHS
            readonly = list(self.security.readonly_paths) or DEFAULT_READONLY_PATHS
            linux["maskedPaths"] = masked
            linux["readonlyPaths"] = readonly
            seccomp = self._seccomp()
            if seccomp is not None:
                linux["seccomp"] = seccomp
        return linux

    def _namespaces(self) -> list[dict[str, str]]:
        pod = self.i.pod
        options = self.security.namespace_options
        namespaces: list[dict[str, str]] = [{"type": "mount"}]
        # Unset (older kubelets): the pod's, whichever it is.
        if options.HasField("userns_options") and idmap.validate(options) != pod.userns:
            raise InvalidArgument(
                "a container's user namespace must be its pod's: mode POD with the pod's "
                "mappings in a pod with one, NODE otherwise"
            )
        if pod.userns_path is not None:
            # Joined first by the runtime: the pod's other namespaces belong to it.
            namespaces.append({"type": "user", "path": pod.userns_path})
        if pod.netns_path is not None and options.network != api.NamespaceMode.NODE:
            namespaces.append({"type": "network", "path": pod.netns_path})
        if pod.ipc_ns_path is not None and options.ipc != api.NamespaceMode.NODE:
            namespaces.append({"type": "ipc", "path": pod.ipc_ns_path})
        if pod.uts_ns_path is not None:
            namespaces.append({"type": "uts", "path": pod.uts_ns_path})
        if options.pid == api.NamespaceMode.CONTAINER:
            namespaces.append({"type": "pid"})
        elif options.pid == api.NamespaceMode.POD:
            if pod.pid_ns_path is None:
                namespaces.append({"type": "pid"})
            else:
                namespaces.append({"type": "pid", "path": pod.pid_ns_path})
        elif options.pid == api.NamespaceMode.TARGET:
            if self.i.target_pid <= 0:
                raise InvalidArgument(
                    f"pid namespace target container {options.target_id!r} is not running"
                )
            namespaces.append({"type": "pid", "path": f"/proc/{self.i.target_pid}/ns/pid"})
        # NamespaceMode.NODE: the host's pid namespace, so no entry.
        return namespaces

    def _devices(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if self.config.CDI_devices:
            raise InvalidArgument(
                f"CDI device {self.config.CDI_devices[0].name!r} requested, but criruntime "
                "does not support CDI"
            )
        rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
        devices: list[dict[str, Any]] = []
        if self.security.privileged:
            return _host_devices(), [{"allow": True, "access": "rwm"}]
        for device in self.config.devices:
            access = device.permissions or "rwm"
            if not set(access) <= set("rwm"):
                raise InvalidArgument(
                    f"device {device.host_path!r}: permissions {access!r} must be made of r, w, m"
                )
            if not device.container_path.startswith("/"):
                raise InvalidArgument(
                    f"device container_path must be an absolute path, got {device.container_path!r}"
                )
            path = os.path.realpath(device.host_path)
            try:
                st = os.stat(path)
            except OSError as e:
                raise InvalidArgument(
                    f"device {device.host_path!r}: {e.strerror or 'cannot stat'}"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                if os.path.commonpath([path, "/dev"]) != "/dev":
                    # Walked to the bottom: "/" would take every file of the host along.
                    raise InvalidArgument(
                        f"device {quote(device.host_path)}: a directory of devices must be "
                        "under /dev"
                    )
                for entry in _host_devices(path):
                    relative = os.path.relpath(entry["path"], path)
                    devices.append({**entry, "path": os.path.join(device.container_path, relative)})
                    rules.append(_device_rule(entry, access))
                continue
            single = _device_entry(path, st)
            if single is None:
                raise InvalidArgument(f"{device.host_path!r} is not a device")
            single["path"] = device.container_path
            devices.append(single)
            rules.append(_device_rule(single, access))
        return devices, rules

    def _seccomp(self) -> dict[str, Any] | None:
        profile = self.security.seccomp
        kind = profile.profile_type
        path = ""
        if self.security.HasField("seccomp"):
            if kind == api.SecurityProfile.ProfileType.RuntimeDefault:
                path = DEFAULT_SECCOMP_PROFILE
            elif kind == api.SecurityProfile.ProfileType.Localhost:
                path = profile.localhost_ref
            else:
                return None
        else:
            legacy = self.security.seccomp_profile_path
            if legacy in ("runtime/default", "docker/default"):
                path = DEFAULT_SECCOMP_PROFILE
            elif legacy.startswith("localhost/"):
                path = legacy.removeprefix("localhost/")
            else:
                return None
        data = read_profile(path)
        caps = set(capabilities_for(self.security))
        return seccomp_to_oci(check_seccomp_profile(data, path), caps)


# What libseccomp names (runc and crun take no others); anything else fails `runc create`, long
# after CreateContainer.
_SECCOMP_ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
})  # fmt: skip
_SECCOMP_ARCHES = frozenset({
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
})  # fmt: skip


def check_seccomp_profile(profile: Any, path: str) -> dict[str, Any]:
    """The profile, if its shape, actions and architectures are ones the runtime takes; else
    INVALID_ARGUMENT naming what is wrong (unknown syscall names are fine: runc skips them)."""

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument(f"seccomp profile {path!r}: {why}")

    def objects(key: str, within: dict[str, Any]) -> list[dict[str, Any]]:
        items = within.get(key) or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise bad(f"{key} must be a list of objects")
        return items

    def known(value: Any, allowed: frozenset[str], what: str) -> None:
        if value not in allowed:
            raise bad(f"unknown {what} {value!r}")

    if not isinstance(profile, dict):
        raise bad("not a JSON object")
    known(profile.get("defaultAction", "SCMP_ACT_ERRNO"), _SECCOMP_ACTIONS, "action")
    architectures = profile.get("architectures") or []
    if not isinstance(architectures, list):
        raise bad("architectures must be a list")
    for entry in objects("archMap", profile):
        subs = entry.get("subArchitectures") or []
        if not isinstance(subs, list):
            raise bad("subArchitectures must be a list")
        architectures = [*architectures, entry.get("architecture"), *subs]
    for arch in architectures:
        known(arch, _SECCOMP_ARCHES, "architecture")
    for rule in objects("syscalls", profile):
        known(rule.get("action"), _SECCOMP_ACTIONS, "action")
        names = rule.get("names", [rule.get("name")] if "name" in rule else [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad(f"syscall names must be strings, got {names!r}")
        for key in ("includes", "excludes"):
            if not isinstance(rule.get(key, {}), dict | None):
                raise bad(f"{key} must be an object")
        # Copied into config.json as they are, so only the shapes runc reads get through.
        args = rule.get("args") or []
        if not isinstance(args, list) or not all(_seccomp_arg(a) for a in args):
            raise bad("syscall args must be objects of index, value, valueTwo and op")
        if not isinstance(rule.get("errnoRet", 0), int | None):
            raise bad("errnoRet must be a number")
    flags = profile.get("flags") or []
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise bad("flags must be a list of strings")
    if not isinstance(profile.get("listenerPath", ""), str):
        raise bad("listenerPath must be a string")
    if not isinstance(profile.get("defaultErrnoRet", 0), int):
        raise bad("defaultErrnoRet must be a number")
    return profile


def _seccomp_arg(arg: Any) -> bool:
    return (
        isinstance(arg, dict)
        and set(arg) <= {"index", "value", "valueTwo", "op"}
        and all(isinstance(arg.get(k, 0), int) for k in ("index", "value", "valueTwo"))
        and isinstance(arg.get("op", ""), str)
    )


def seccomp_to_oci(profile: dict[str, Any], caps: set[str]) -> dict[str, Any]:
    """A Docker/containerd seccomp profile (or an OCI linux.seccomp object) → linux.seccomp."""
    arch = _oci_arch()
    architectures = list(profile.get("architectures") or [])
    for arch_entry in profile.get("archMap") or []:
        if arch_entry.get("architecture") == arch:
            architectures = [arch, *(arch_entry.get("subArchitectures") or [])]
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction", "SCMP_ACT_ERRNO")}
    for key in ("defaultErrnoRet", "flags", "listenerPath"):
        if key in profile:
            out[key] = profile[key]
    if architectures:
        out["architectures"] = architectures
    syscalls = []
    for rule in profile.get("syscalls") or []:
        includes = rule.get("includes") or {}
        excludes = rule.get("excludes") or {}
        if includes.get("caps") and not set(includes["caps"]) <= caps:
            continue
        if excludes.get("caps") and set(excludes["caps"]) & caps:
            continue
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        if excludes.get("arches") and arch in excludes["arches"]:
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        if not names:
            continue
        entry: dict[str, Any] = {"names": names, "action": rule["action"]}
        for key in ("errnoRet", "args"):
            if rule.get(key) is not None:
                entry[key] = rule[key]
        syscalls.append(entry)
    out["syscalls"] = syscalls
    return out


def _oci_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(
        machine, "SCMP_ARCH_" + machine.upper()
    )


def _idmap(m: api.IDMapping) -> idmap.IdMap:
    return idmap.IdMap(m.container_id, m.host_id, m.length)


def _bind(destination: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def _device_entry(path: str, st: os.stat_result) -> dict[str, Any] | None:
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _device_rule(entry: dict[str, Any], access: str) -> dict[str, Any]:
    return {
        "allow": True,
        "type": entry["type"],
        "major": entry["major"],
        "minor": entry["minor"],
        "access": access,
    }


def _host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # /dev/pts and /dev/shm are mounted separately; the host's console/ptmx are not ours.
        dirnames[:] = [
            d
            for d in dirnames
            if os.path.join(dirpath, d) not in ("/dev/pts", "/dev/shm", "/dev/mqueue")
        ]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path in ("/dev/console", "/dev/ptmx"):
                continue
            with contextlib.suppress(OSError):
                entry = _device_entry(path, os.lstat(path))
                if entry is not None:
                    out.append(entry)
    return out

"""PodSandbox: what the rest of the runtime knows about a pod, as stored in the pods table.

Container code joins a pod through these fields: the pinned namespace files (`*_ns_path`,
empty for the host's namespace), `cgroup_parent`, and the files it bind-mounts into containers
(`hostname_path`, `hosts_path`, `resolv_conf_path`, `shm_path`).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api


class SandboxState(enum.StrEnum):
    READY = "READY"
    NOTREADY = "NOTREADY"

    def to_api(self) -> api.PodSandboxState.ValueType:
        return (
            api.PodSandboxState.SANDBOX_READY
            if self is SandboxState.READY
            else api.PodSandboxState.SANDBOX_NOTREADY
        )


def name_key(metadata: api.PodSandboxMetadata) -> str:
    """The unique key kubelet's (name, namespace, uid, attempt) maps to, as containerd names it."""
    return f"{metadata.name}_{metadata.namespace}_{metadata.uid}_{metadata.attempt}"


@dataclass(frozen=True)
class PodSandbox:
    id: str
    state: SandboxState
    created_at: int  # unix nanoseconds
    config: api.PodSandboxConfig = field(repr=False)
    runtime_handler: str
    bundle_dir: str  # <state>/sandboxes/<id>: the pod's files
    netns_path: str = ""  # "" when the pod uses the node's namespace
    ipc_ns_path: str = ""
    uts_ns_path: str = ""
    pid_ns_path: str | None = None  # set only for a pod-level PID namespace
    pid_init_pid: int = 0  # the process holding pid_ns_path
    userns_path: str = ""  # the pod's own user namespace (owner of the others); "" for the host's
    cgroup_parent: str = ""  # the pod cgroup, runc cgroupsPath form ("/kubepods/.../pod<uid>")
    cgroup_owned_from: str = ""  # top-most cgroup we made for it ("" if kubelet made it all)
    hostname: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    resolv_conf_path: str = ""
    shm_path: str | None = None  # None when the pod shares the node's IPC namespace
    ip: str = ""
    additional_ips: tuple[str, ...] = ()
    network_name: str = ""  # CNI network the pod was attached to ("" for host network)
    network_result: dict[str, Any] = field(default_factory=dict, repr=False)
    creating: bool = False  # RunPodSandbox still working (or died mid-way: recovery cleans it)

    # ---- convenience views ------------------------------------------------------------------

    @property
    def metadata(self) -> api.PodSandboxMetadata:
        return self.config.metadata

    @property
    def name(self) -> str:
        return self.config.metadata.name

    @property
    def namespace(self) -> str:
        return self.config.metadata.namespace

    @property
    def uid(self) -> str:
        return self.config.metadata.uid

    @property
    def attempt(self) -> int:
        return self.config.metadata.attempt

    @property
    def name_key(self) -> str:
        return name_key(self.config.metadata)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.labels)

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.config.annotations)

    @property
    def log_directory(self) -> str:
        return self.config.log_directory

    @property
    def namespace_options(self) -> api.NamespaceOption:
        return self.config.linux.security_context.namespace_options

    @property
    def host_network(self) -> bool:
        return self.namespace_options.network == api.NamespaceMode.NODE

    @property
    def ready(self) -> bool:
        return self.state is SandboxState.READY

    def replace(self, **changes: Any) -> PodSandbox:
        return dataclasses.replace(self, **changes)

    # ---- persistence (the `data` JSON column) ------------------------------------------------

    _DATA_FIELDS = (
        "bundle_dir", "netns_path", "ipc_ns_path", "uts_ns_path", "pid_ns_path", "pid_init_pid",
        "cgroup_parent", "cgroup_owned_from", "hostname", "hostname_path", "hosts_path",
        "resolv_conf_path", "shm_path", "ip", "additional_ips", "network_name", "network_result",
        "creating", "userns_path",
    )  # fmt: skip

    def data(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self._DATA_FIELDS}
        out["additional_ips"] = list(self.additional_ips)
        return out

    @classmethod
    def from_row(
        cls,
        *,
        id: str,
        state: str,
        created_at: int,
        config: bytes,
        runtime: str,
        data: dict[str, Any],
    ) -> PodSandbox:
        parsed = api.PodSandboxConfig()
        parsed.ParseFromString(config)
        known = {k: v for k, v in data.items() if k in cls._DATA_FIELDS}
        known["additional_ips"] = tuple(known.get("additional_ips", ()))
        return cls(
            id=id,
            state=SandboxState(state),
            created_at=created_at,
            config=parsed,
            runtime_handler=runtime,
            **known,
        )

"""Container: what the runtime knows about one container, as stored in the containers table."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api


class ContainerState(enum.StrEnum):
    CREATING = "CREATING"  # CreateContainer at work, or died mid-way: recovery cleans it up
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    UNKNOWN = "UNKNOWN"

    def to_api(self) -> api.ContainerState.ValueType:
        return {
            ContainerState.CREATING: api.ContainerState.CONTAINER_UNKNOWN,
            ContainerState.CREATED: api.ContainerState.CONTAINER_CREATED,
            ContainerState.RUNNING: api.ContainerState.CONTAINER_RUNNING,
            ContainerState.EXITED: api.ContainerState.CONTAINER_EXITED,
            ContainerState.UNKNOWN: api.ContainerState.CONTAINER_UNKNOWN,
        }[self]


def name_key(config: api.ContainerConfig, pod: api.PodSandboxConfig) -> str:
    """Unique per node: name_podname_namespace_uid_attempt, as containerd names it."""
    meta, pod_meta = config.metadata, pod.metadata
    return f"{meta.name}_{pod_meta.name}_{pod_meta.namespace}_{pod_meta.uid}_{meta.attempt}"


@dataclass(frozen=True)
class Container:
    id: str
    pod_id: str
    name_key: str
    state: ContainerState
    created_at: int  # unix nanoseconds
    config: api.ContainerConfig = field(repr=False)
    image_id: str
    runtime_handler: str  # resolved handler name (never "")
    bundle_dir: str = ""  # <state>/containers/<id>: config.json, rootfs mount, conmon files
    storage_dir: str = ""  # <root>/containers/<id>: overlay upper/work
    log_path: str = ""  # "" when the pod and container ask for no log
    image_name: str = ""  # the image as the user named it, normalised
    image_ref: str = ""  # repo digest when known, else the image id
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    uid: int = 0
    gid: int = 0
    supplemental_groups: tuple[int, ...] = ()
    stop_signal: int = 15
    warnings: tuple[str, ...] = ()
    image_volumes: tuple[str, ...] = ()  # IDs of the images mounted as volumes: pinned

    _DATA_FIELDS = (
        "bundle_dir", "storage_dir", "log_path", "image_name", "image_ref", "pid", "started_at",
        "finished_at", "exit_code", "reason", "message", "uid", "gid", "supplemental_groups",
        "stop_signal", "warnings", "image_volumes",
    )  # fmt: skip

    @property
    def name(self) -> str:
        return self.config.metadata.name

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.labels)

    def replace(self, **changes: Any) -> Container:
        return dataclasses.replace(self, **changes)

    def data(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self._DATA_FIELDS}
        out["supplemental_groups"] = list(self.supplemental_groups)
        out["warnings"] = list(self.warnings)
        out["image_volumes"] = list(self.image_volumes)
        return out

    @classmethod
    def from_row(
        cls,
        *,
        id: str,
        pod_id: str,
        name_key: str,
        state: str,
        created_at: int,
        config: bytes,
        image_id: str,
        runtime: str,
        data: dict[str, Any],
    ) -> Container:
        parsed = api.ContainerConfig()
        parsed.ParseFromString(config)
        known = {k: v for k, v in data.items() if k in cls._DATA_FIELDS}
        known["supplemental_groups"] = tuple(known.get("supplemental_groups", ()))
        known["warnings"] = tuple(known.get("warnings", ()))
        known["image_volumes"] = tuple(known.get("image_volumes", ()))
        return cls(
            id=id,
            pod_id=pod_id,
            name_key=name_key,
            state=ContainerState(state),
            created_at=created_at,
            config=parsed,
            image_id=image_id,
            runtime_handler=runtime,
            **known,
        )

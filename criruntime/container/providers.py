"""What the container code needs from pods and images, as small views of its own.

Keeping these here (rather than importing the sandbox and image models directly) lets the
container layer be built and tested on its own; `service.py` adapts the real stores to them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.oci.idmap import UserNamespaceMappings


@dataclass(frozen=True)
class PodInfo:
    """The parts of a pod sandbox a container joins. A None namespace path means the host's."""

    id: str
    config: api.PodSandboxConfig
    ready: bool
    runtime_handler: str  # "" for the default handler
    netns_path: str | None = None
    ipc_ns_path: str | None = None
    uts_ns_path: str | None = None
    pid_ns_path: str | None = None
    userns_path: str | None = None  # the pod's own user namespace; None: the host's
    userns: UserNamespaceMappings | None = None  # its mappings
    cgroup_parent: str = ""
    hostname: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    resolv_conf_path: str = ""
    shm_path: str = ""
    log_directory: str = ""


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image config."""

    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    stop_signal: str = ""


@dataclass(frozen=True)
class ImageInfo:
    id: str  # config digest, sha256:…
    config: ImageConfig
    layer_dirs: list[str]  # overlay lower dirs, lowest first
    chain_ids: list[str] = field(default_factory=list)  # leased while the container exists
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)


# Both raise criruntime.errors.NotFound for an unknown pod or image.
PodLookup = Callable[[str], Awaitable[PodInfo]]
ImageLookup = Callable[[str], Awaitable[ImageInfo]]

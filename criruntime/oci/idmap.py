"""User-namespace id mappings (KEP-127): the pod's NamespaceOption.userns_options checked, and
the same mappings in the forms the kernel (uid_map lines) and the OCI spec take."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument

_MAX_ID = 2**32 - 1  # (uid_t)-1 is never a valid id
_MAX_LINES = 340  # the kernel's limit on uid_map / gid_map lines


@dataclass(frozen=True)
class IdMap:
    container_id: int
    host_id: int
    length: int

    def line(self) -> str:
        return f"{self.container_id} {self.host_id} {self.length}\n"


@dataclass(frozen=True)
class UserNamespaceMappings:
    uids: tuple[IdMap, ...]
    gids: tuple[IdMap, ...]

    def host_uid(self, container_uid: int) -> int:
        return _to_host(self.uids, container_uid)

    def host_gid(self, container_gid: int) -> int:
        return _to_host(self.gids, container_gid)

    def to_oci(self) -> dict[str, list[dict[str, int]]]:
        def oci(maps: tuple[IdMap, ...]) -> list[dict[str, int]]:
            return [
                {"containerID": m.container_id, "hostID": m.host_id, "size": m.length} for m in maps
            ]

        return {"uidMappings": oci(self.uids), "gidMappings": oci(self.gids)}


def _to_host(maps: tuple[IdMap, ...], container_id: int) -> int:
    for m in maps:
        if m.container_id <= container_id < m.container_id + m.length:
            return m.host_id + container_id - m.container_id
    raise InvalidArgument(f"id {container_id} is not mapped in the pod's user namespace")


def _checked(kind: str, raw: Sequence[api.IDMapping]) -> tuple[IdMap, ...]:
    if not raw:
        raise InvalidArgument(f"user namespace mode POD needs {kind} mappings")
    if len(raw) > _MAX_LINES:
        raise InvalidArgument(f"{len(raw)} {kind} mappings; the kernel takes at most {_MAX_LINES}")
    maps = tuple(IdMap(m.container_id, m.host_id, m.length) for m in raw)
    for m in maps:
        what = f"{kind} mapping {m.container_id}:{m.host_id}:{m.length}"
        if m.length == 0:
            raise InvalidArgument(f"{what}: length must not be 0")
        if m.container_id + m.length > _MAX_ID or m.host_id + m.length > _MAX_ID:
            raise InvalidArgument(f"{what}: runs past the largest id")
        if m.host_id == 0:
            # The whole point is that root inside is not root outside.
            raise InvalidArgument(f"{what}: must not map onto host id 0")
    for side in ("container_id", "host_id"):
        spans = sorted((getattr(m, side), getattr(m, side) + m.length) for m in maps)
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                raise InvalidArgument(f"{kind} mappings overlap on the {side.split('_')[0]} side")
    if not any(m.container_id == 0 for m in maps):
        raise InvalidArgument(f"{kind} mappings must map container id 0 (root)")
    return maps


def validate(options: api.NamespaceOption) -> UserNamespaceMappings | None:
    """The pod's mappings when it asks for its own user namespace; None for the host's."""
    if not options.HasField("userns_options"):
        return None
    userns = options.userns_options
    if userns.mode == api.NamespaceMode.NODE:
        return None
    if userns.mode != api.NamespaceMode.POD:
        name = api.NamespaceMode.Name(userns.mode)
        raise InvalidArgument(f"user namespace mode {name} is not supported (only POD or NODE)")
    for what, mode in (("network", options.network), ("ipc", options.ipc), ("pid", options.pid)):
        if mode == api.NamespaceMode.NODE:
            raise InvalidArgument(
                f"a pod with its own user namespace cannot use the node's {what} namespace"
            )
    return UserNamespaceMappings(_checked("uid", userns.uids), _checked("gid", userns.gids))

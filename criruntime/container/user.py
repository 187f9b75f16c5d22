"""Who a container runs as: CRI run_as_* and the image USER, resolved in the image's
/etc/passwd and /etc/group (read inside the rootfs, symlinks resolved as if it were `/`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument
from criruntime.files import FileTooLarge, NotRegularFile, read_regular_file

_MAX_LINKS = 40
_MAX_DB_BYTES = 16 << 20  # /etc/passwd or /etc/group; real ones are a few KiB


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"
    username: str = ""


@dataclass(frozen=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


def secure_join(root: str, path: str) -> str:
    """`path` inside `root`, with every symlink on the way resolved inside `root`."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > _MAX_LINKS:
                raise InvalidArgument(f"too many symlinks resolving {path!r} in the rootfs")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _read(root: str, path: str) -> list[list[str]]:
    full = secure_join(root, path)
    try:
        data = read_regular_file(full, _MAX_DB_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except NotRegularFile:  # a FIFO or a device would block or never end
        if os.path.isdir(full):
            return []
        raise InvalidArgument(f"the image's {path} is not a regular file") from None
    except FileTooLarge:
        raise InvalidArgument(f"the image's {path} is larger than {_MAX_DB_BYTES} bytes") from None
    lines = data.decode(errors="replace").splitlines()
    return [line.split(":") for line in lines if line and not line.startswith("#")]


def _passwd(root: str) -> list[_PasswdEntry]:
    out = []
    for fields in _read(root, "/etc/passwd"):
        if len(fields) >= 6 and fields[2].isdigit() and fields[3].isdigit():
            out.append(_PasswdEntry(fields[0], int(fields[2]), int(fields[3]), fields[5] or "/"))
    return out


def _groups(root: str) -> list[tuple[str, int, list[str]]]:
    out = []
    for fields in _read(root, "/etc/group"):
        if len(fields) >= 3 and fields[2].isdigit():
            members = fields[3].split(",") if len(fields) > 3 and fields[3] else []
            out.append((fields[0], int(fields[2]), members))
    return out


MAX_ID = 2**32 - 2  # ids are 32 bits, and (uid_t)-1 means "leave unchanged" to the kernel


def _check_id(value: int, what: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"{what} must be between 0 and {MAX_ID}, got {value}")
    return value


def _lookup_group(root: str, spec: str) -> int:
    if spec.isdigit():
        return _check_id(int(spec), "the group id")
    for name, gid, _ in _groups(root):
        if name == spec:
            return gid
    raise InvalidArgument(f"group {spec!r} not found in the image's /etc/group")


def resolve_user(
    rootfs: str, security: api.LinuxContainerSecurityContext, image_user: str
) -> ResolvedUser:
    """containerd's rules: run_as_user / run_as_username win over the image USER; RunAsGroup
    needs a user; the primary gid comes from RunAsGroup, the USER's group part, or passwd."""
    has_uid = security.HasField("run_as_user")
    has_name = bool(security.run_as_username)
    has_gid = security.HasField("run_as_group")
    if has_gid and not (has_uid or has_name):
        raise InvalidArgument("run_as_group is set without run_as_user or run_as_username")
    passwd = _passwd(rootfs)
    group_spec = ""
    entry: _PasswdEntry | None = None
    if has_uid:
        uid = _check_id(int(security.run_as_user.value), "run_as_user")
        entry = next((e for e in passwd if e.uid == uid), None)
    else:
        user_spec = security.run_as_username
        if not has_name:
            user_spec, _, group_spec = image_user.partition(":")
        if user_spec == "":
            uid = 0
            entry = next((e for e in passwd if e.uid == 0), None)
        elif user_spec.isdigit():
            uid = _check_id(int(user_spec), "the user id")
            entry = next((e for e in passwd if e.uid == uid), None)
        else:
            entry = next((e for e in passwd if e.name == user_spec), None)
            if entry is None:
                raise InvalidArgument(f"user {user_spec!r} not found in the image's /etc/passwd")
            uid = entry.uid
    if has_gid:
        gid = _check_id(int(security.run_as_group.value), "run_as_group")
    elif group_spec:
        gid = _lookup_group(rootfs, group_spec)
    else:
        gid = entry.gid if entry is not None else 0
    additional = [gid]
    # Merge (the default) adds the groups the image's /etc/group gives the user; Strict takes
    # only the primary group and what the request lists, so an image cannot add groups.
    strict = security.supplemental_groups_policy == api.SupplementalGroupsPolicy.Strict
    if entry is not None and not strict:
        for _, group_gid, members in _groups(rootfs):
            if entry.name in members and group_gid not in additional:
                additional.append(group_gid)
    for extra in security.supplemental_groups:
        if extra not in additional:
            additional.append(_check_id(int(extra), "supplemental_groups"))
    return ResolvedUser(
        uid=uid,
        gid=gid,
        additional_gids=additional,
        home=entry.home if entry is not None else "/",
        username=entry.name if entry is not None else "",
    )

"""A container's root: overlayfs of the image layers plus the container's own upper/work dirs.

Layers are read-only lower dirs shared by every container of the image; writes land in
<root>/containers/<id>/upper, which goes with the container.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

from criruntime.native import linux
from criruntime.oci import mountns

# overlayfs reads its options from one page; leave room for upper/work and the separators.
_MAX_INLINE_OPTIONS = 3800
# <bundle>/mounts: what the daemon mounts for a container besides its rootfs (image volumes,
# idmapped layers and volumes), all unmounted together by `unmount_aux`.
_AUX = "mounts"


def aux_dir(bundle: str, *parts: str) -> str:
    return os.path.join(bundle, _AUX, *parts)


def mount_overlay(lower_dirs: list[str], upper: str, work: str, target: str) -> None:
    """Mounts `lower_dirs` (lowest first) + upper/work at target. An image with no layers
    gets an empty lower dir next to upper."""
    os.makedirs(upper, mode=0o755, exist_ok=True)
    os.makedirs(work, mode=0o700, exist_ok=True)
    os.makedirs(target, mode=0o755, exist_ok=True)
    if not lower_dirs:
        empty = os.path.join(os.path.dirname(upper), "empty")
        os.makedirs(empty, mode=0o755, exist_ok=True)
        lower_dirs = [empty]
    _overlay(lower_dirs, target, f"upperdir={upper},workdir={work}", 0)


def mount_layers_readonly(lower_dirs: list[str], empty: str, target: str) -> None:
    """Mounts `lower_dirs` (lowest first) read-only, noexec, nosuid and nodev at target: an
    overlay without upper dir, which needs two lower dirs, so `empty` pads a short list."""
    os.makedirs(empty, mode=0o755, exist_ok=True)
    os.makedirs(target, mode=0o755, exist_ok=True)
    padded = [empty] * max(0, 2 - len(lower_dirs)) + lower_dirs
    flags = linux.MS_RDONLY | linux.MS_NOEXEC | linux.MS_NOSUID | linux.MS_NODEV
    _overlay(padded, target, "", flags)


def _overlay(lower_dirs: list[str], target: str, extra: str, flags: int) -> None:
    top_first = list(reversed(lower_dirs))
    tail = f",{extra}" if extra else ""
    options = f"lowerdir={':'.join(top_first)}{tail}"
    if len(options) <= _MAX_INLINE_OPTIONS:
        linux.mount("overlay", target, "overlay", flags, options)
        return
    # Too long for a page: name the layers relative to their common parent and mount from
    # there (mount(8) in a child, since chdir would move every thread of the daemon).
    base = os.path.commonpath(lower_dirs)
    relative = ":".join(os.path.relpath(d, base) for d in top_first)
    if flags & linux.MS_RDONLY:
        tail += ",ro,noexec,nosuid,nodev"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={relative}{tail}", target],
        cwd=base, check=True, capture_output=True,
    )  # fmt: skip


def mounted(target: str) -> bool:
    return os.path.ismount(target)


def unmount(target: str) -> None:
    """Detaches the mount at target; not mounted is fine."""
    while os.path.ismount(target):
        try:
            linux.umount(target, detach=True)
        except OSError:
            return


def has_aux(bundle: str) -> bool:
    return os.path.isdir(aux_dir(bundle))


def unmount_aux(bundle: str) -> None:
    """Unmounts everything under <bundle>/mounts, deepest first; nothing there is fine. Found
    in /proc/self/mountinfo: an idmapped bind of the same filesystem looks like a plain dir to
    os.path.ismount."""
    prefix = aux_dir(bundle) + os.sep
    if not os.path.isdir(prefix):
        return
    with open("/proc/self/mountinfo") as f:
        targets = {line.split()[4] for line in f if line.split()[4].startswith(prefix)}
    for target in sorted(targets, key=len, reverse=True):
        with contextlib.suppress(OSError):
            linux.umount(target, detach=True)


def remove_dirs(*paths: str) -> None:
    """Deletes each tree, first detaching any mount left below it: rmtree would otherwise
    delete through a bind into the host path it shows (a volume staged for crun)."""
    mounts = [m.mount_point for m in mountns.read_mounts()]
    for path in paths:
        below = sorted((m for m in mounts if m.startswith(path + "/")), reverse=True)
        for target in below:
            with contextlib.suppress(OSError):
                linux.umount(target, detach=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)


def move_to_trash(path: str, trash: str, name: str) -> str | None:
    """Renames `path` to `trash`/`name` (a directory on the same filesystem as `path`), so it
    vanishes from its place at the cost of one rename; returns where it now is, `path` itself
    when it cannot move (another filesystem, a mount point), None when it does not exist."""
    target = os.path.join(trash, name)
    try:
        os.rename(path, target)
    except FileNotFoundError:
        if not os.path.lexists(path):
            return None
        try:
            os.makedirs(trash, mode=0o700, exist_ok=True)  # the trash itself went missing
            os.rename(path, target)
        except OSError:
            return path
    except OSError:
        return path
    return target

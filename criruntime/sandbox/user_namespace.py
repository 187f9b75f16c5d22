"""Pod user namespaces (KEP-127, `hostUsers: false`): the namespace made together with the
network, IPC, UTS (and PID) namespaces it owns, and the start-up probe of what the host can do.
The mappings and their checks are in oci/idmap.py.

The daemon is multithreaded, so it can neither unshare nor join a user namespace itself: a
single-threaded child (userns_helper.py) unshares it; the daemon, root outside, writes the
child's uid_map/gid_map; the child then unshares the other namespaces, which the new user
namespace owns (so runc, once inside it, can mount /proc, /sys and mqueue there), and the daemon
bind-mounts them all to files as it does for pods without one (namespaces.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from criruntime.native import linux, mount_api
from criruntime.oci.idmap import IdMap, UserNamespaceMappings

_HELPER_TIMEOUT = 20.0


@dataclass(frozen=True)
class Made:
    """The helper's pid (its /proc/<pid>/ns/* are the new namespaces) and the pod init's."""

    helper_pid: int
    init_pid: int


@contextlib.contextmanager
def helper_namespaces(
    mappings: UserNamespaceMappings,
    flags: int,
    hostname: str,
    init_argv: list[str],
    init_env: dict[str, str],
) -> Iterator[Made]:
    """Runs the helper up to "ready"; inside the block its namespaces are there to pin, and on
    leaving it the helper exits (the pinned files and the init keep them alive)."""
    argv = [sys.executable, "-I", "-m", "criruntime.sandbox.userns_helper", str(flags), hostname]
    helper = subprocess.Popen(
        [*argv, *init_argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=init_env,
        text=True,
        close_fds=True,
    )
    assert helper.stdin is not None and helper.stdout is not None
    try:
        _expect(helper, "userns")
        for name, maps in (("uid_map", mappings.uids), ("gid_map", mappings.gids)):
            with open(f"/proc/{helper.pid}/{name}", "w") as f:
                f.write("".join(m.line() for m in maps))
        helper.stdin.write("mapped\n")
        helper.stdin.flush()
        ready = _expect(helper, "ready")
        yield Made(helper.pid, int(ready.split()[1]))
    finally:
        with contextlib.suppress(OSError):
            helper.stdin.write("pinned\n")
            helper.stdin.close()
        try:
            helper.wait(_HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()


def _expect(helper: subprocess.Popen[str], word: str) -> str:
    assert helper.stdout is not None
    line = helper.stdout.readline().strip()
    if not line.startswith(word):
        helper.kill()
        _, err = helper.communicate(timeout=_HELPER_TIMEOUT)
        raise OSError(f"creating the pod's user namespace failed: {err.strip() or 'no output'}")
    return line


def probe(scratch: str) -> str:
    """ "" when this host can run pods in user namespaces, else why not: makes a user namespace
    through the helper, idmaps a directory on the filesystem of `scratch` (the daemon's root,
    where image layers live) and mounts an overlay over it, as container rootfs are mounted.
    Blocking. The mounts are made in a private mount namespace of a thread of its own, so
    nobody else ever sees them and they go with the thread."""
    answer: list[str] = []
    worker = threading.Thread(target=lambda: answer.append(_probe(scratch)), name="userns-probe")
    worker.start()
    worker.join()
    return answer[0] if answer else "the probe thread died"


def _probe(scratch: str) -> str:
    probe_map = (IdMap(0, 100000, 65536),)
    layer, idmapped, upper, work, merged = (
        os.path.join(scratch, name) for name in ("layer", "idmapped", "upper", "work", "merged")
    )
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        linux.unshare(linux.CLONE_NEWNS)  # this thread only
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE, None)
        for d in (layer, idmapped, upper, work, merged):
            os.makedirs(d, mode=0o700)
        with open(os.path.join(layer, "f"), "w"):
            pass
        with helper_namespaces(UserNamespaceMappings(probe_map, probe_map), 0, "", [], {}) as made:
            mount_api.idmapped_clone(layer, idmapped, f"/proc/{made.helper_pid}/ns/user")
        options = f"lowerdir={idmapped},upperdir={upper},workdir={work}"
        linux.mount("overlay", merged, "overlay", 0, options)
        owner = os.stat(os.path.join(merged, "f")).st_uid
        if owner != 100000:
            return f"an idmapped layer under an overlay shows owner {owner}, not 100000"
        return ""
    except OSError as e:
        return f"{e.strerror or e} ({e.filename or 'user namespace helper'})"
    finally:
        for target in (merged, idmapped):
            # Not os.path.ismount: an idmapped bind of the same filesystem looks like a dir.
            with contextlib.suppress(OSError):
                linux.umount(target)
        shutil.rmtree(scratch, ignore_errors=True)

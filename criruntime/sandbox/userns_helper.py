"""The child that makes a pod's user namespace and the namespaces it owns:
`python -m criruntime.sandbox.userns_helper FLAGS HOSTNAME [INIT-ARGV...]`.

A multithreaded process (the daemon) can neither unshare nor join a user namespace, so this
single-threaded child does it. Line protocol on stdin/stdout with the daemon (user_namespace.py):

  child: unshare(CLONE_NEWUSER)                           → "userns"
  daemon: writes /proc/<child>/{uid_map,gid_map}          → "mapped"
  child: becomes root of the namespace, unshares FLAGS (net, ipc, uts, pid: owned by the new
         user namespace), sets the hostname, brings up lo, starts INIT-ARGV (PID 1 of a new
         PID namespace) if FLAGS has CLONE_NEWPID          → "ready <init pid>"
  daemon: pins /proc/<child>/ns/* and /proc/<init>/ns/pid → "pinned" (or closes stdin)
  child: exits; the pinned files keep the namespaces, the init lives on.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import subprocess
import sys

from criruntime.native import linux

CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _expect(word: str) -> None:
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit(f"userns helper: expected {word!r}, got {line!r}")


def _loopback_up() -> None:
    # As namespaces.py does; repeated so this child imports nothing heavy (grpc) to start fast.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, _SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def main(argv: list[str]) -> int:
    flags, hostname, init_argv = int(argv[0]), argv[1], argv[2:]
    linux.unshare(CLONE_NEWUSER)
    _say("userns")
    _expect("mapped")
    # Root of the new namespace (the mapped host id, never host root) from here on.
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    linux.unshare(flags)
    if flags & linux.CLONE_NEWUTS and hostname:
        linux.sethostname(hostname)
    if flags & linux.CLONE_NEWNET:
        _loopback_up()
    init_pid = 0
    if flags & linux.CLONE_NEWPID:
        init = subprocess.Popen(
            init_argv,
            env=dict(os.environ),  # the daemon's marker of the pod, as namespaces.create sets
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        init_pid = init.pid
        init.returncode = 0  # not waited for: it outlives this helper
    _say(f"ready {init_pid}")
    sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

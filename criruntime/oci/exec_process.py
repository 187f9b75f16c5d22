"""An interactive `<runtime> exec`: the process's stdio handed to the caller as fds.

Without a tty the process gets three pipes. With a tty, the runtime (not detached) finds a
terminal on its own stdio, makes the container's pty and copies between the two, as runc does
under CRI-O: we give it the slave of a pty whose master we keep. The runtime exits with the
process's exit status (128+N for a signal), so a child of ours reports it without any subreaper.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import struct
import subprocess
import termios
import tty as tty_mod
from dataclasses import dataclass
from typing import Any

from criruntime.oci.runtime import OciRuntime

_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1024 * 1024  # fs.pipe-max-size's default


@dataclass
class ExecProcess:
    popen: subprocess.Popen[bytes]
    pidfd: int
    pid_file: str
    stdin: int  # our ends: -1 when not asked for
    stdout: int
    stderr: int
    master: int  # the pty master with a tty (stdin and stdout are dups of it), else -1

    def container_pid(self) -> int:
        """The process's host pid once runc has started it, else 0."""
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def signal_process(self, sig: int) -> None:
        pid = self.container_pid()
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def resize(self, width: int, height: int) -> None:
        """Sizes the process's terminal. Our pty first, and SIGWINCH to runc, which copies that
        size onto the container's pty; crun does not, so the container's pty is also sized
        directly, through the process's own terminal fd."""
        if self.master < 0:
            return
        size = struct.pack("HHHH", height, width, 0, 0)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGWINCH)
        pid = self.container_pid()
        for fd in range(3) if pid > 0 else ():
            try:
                tty_fd = os.open(
                    f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
                )
            except OSError:
                continue
            try:
                if os.isatty(tty_fd):
                    fcntl.ioctl(tty_fd, termios.TIOCSWINSZ, size)
                    return
            finally:
                os.close(tty_fd)

    def close_stdin(self) -> None:
        if self.stdin >= 0 and self.master < 0:
            os.close(self.stdin)
        self.stdin = -1

    def close(self) -> None:
        for fd in {self.stdin, self.stdout, self.stderr, self.master, self.pidfd}:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin = self.stdout = self.stderr = self.master = self.pidfd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_file)


def start_exec(
    runtime: OciRuntime,
    container_id: str,
    bundle: str,
    process: dict[str, Any],
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    size: tuple[int, int] | None = None,
) -> ExecProcess:
    """Starts `<runtime> exec` for `process` (an OCI process); the caller owns the result."""
    pid_file = os.path.join(bundle, f"exec-{secrets.token_hex(6)}.pid")
    process = {**process, "terminal": tty}
    if tty and size:
        process["consoleSize"] = {"width": size[0], "height": size[1]}
    spec_fd = os.memfd_create("process.json", os.MFD_CLOEXEC)
    theirs: list[int] = []
    ours = {"stdin": -1, "stdout": -1, "stderr": -1, "master": -1}
    try:
        os.write(spec_fd, json.dumps(process).encode())
        if tty:
            master, slave = os.openpty()
            os.set_inheritable(master, False)
            theirs.append(slave)
            # Raw from the start (runc makes it raw too, but only once running): input written
            # before then must reach the container's pty as typed, ^D included.
            tty_mod.setraw(slave)
            if size:
                fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
            ours.update(master=master, stdin=master, stdout=master)
            child_stdio = [slave, slave, slave]
        else:
            child_stdio = []
            for name, wanted, reading in (
                ("stdin", stdin, False),
                ("stdout", stdout, True),
                ("stderr", stderr, True),
            ):
                if not wanted:
                    child_stdio.append(subprocess.DEVNULL)
                    continue
                r, w = os.pipe2(os.O_CLOEXEC)
                if reading:
                    # A bigger pipe lets the process run ahead of the client's reads (as
                    # much as the default 64 KiB allows only a few frames).
                    with contextlib.suppress(OSError):
                        fcntl.fcntl(r, _F_SETPIPE_SZ, _PIPE_SIZE)
                mine, child = (r, w) if reading else (w, r)
                ours[name] = mine
                theirs.append(child)
                child_stdio.append(child)
        for fd in (ours["stdin"], ours["stdout"], ours["stderr"]):
            if fd >= 0:
                os.set_blocking(fd, False)
        popen = subprocess.Popen(
            runtime.argv(
                "exec", "--process", f"/proc/self/fd/{spec_fd}", "--pid-file", pid_file,
                container_id,
            ),
            stdin=child_stdio[0],
            stdout=child_stdio[1],
            stderr=child_stdio[2],
            pass_fds=(spec_fd,),
            start_new_session=True,  # a tty's hang-up or the daemon's signals stay away from it
        )  # fmt: skip
    except BaseException:
        for fd in {v for v in ours.values() if v >= 0}:
            os.close(fd)
        raise
    finally:
        os.close(spec_fd)
        for fd in theirs:
            with contextlib.suppress(OSError):
                os.close(fd)
    return ExecProcess(
        popen=popen,
        pidfd=os.pidfd_open(popen.pid),
        pid_file=pid_file,
        stdin=ours["stdin"],
        stdout=ours["stdout"],
        stderr=ours["stderr"],
        master=ours["master"],
    )

"""The OCI runtime adapter: runc / crun driven through conmon. No caller builds a command line.

One `OciRuntime` per CRI runtime handler. Each container has a bundle directory holding
config.json, the rootfs mount point and conmon's files:

    <bundle>/config.json       the OCI spec
    <bundle>/rootfs/           the container's root (mounted by the caller)
    <bundle>/conmon.pid        conmon's pid (conmon outlives the daemon)
    <bundle>/pidfile           the container's init pid (host pid namespace)
    <bundle>/ctl, winsz        conmon's control fifos (log reopen, terminal resize)
    <bundle>/persist/exit      the exit code, written by conmon when init exits
    <bundle>/persist/oom       present when the kernel OOM-killed the container
    <bundle>/conmon.log        conmon's own stderr (diagnostics only)

conmon is started with API version 1: it double-forks, runs `<runtime> create`, reports the init
pid (or the runtime's error) on the sync pipe, then stays as the container's subreaper, copies
its stdio into the CRI log file and writes the exit file. So exit codes land on disk even while
the daemon is down, and the daemon may be killed at any time without touching containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import select
import shutil
import signal as signal_mod
import time
from dataclasses import dataclass
from typing import Any

from criruntime.child import Child, readable
from criruntime.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unknown
from criruntime.oci import mountns
from criruntime.oci.mountns import PrivateMountNamespace

log = logging.getLogger("criruntime.oci")

CONMON = "conmon"
CREATE_TIMEOUT = 60.0  # conmon + runtime create; runc usually needs ~50 ms
COMMAND_TIMEOUT = 30.0  # start, kill, delete, update, state
_EXIT_POLL_MIN = 0.001
_EXIT_POLL_MAX = 0.1
_READ_CHUNK = 65536
# conmon's control fifo message that reopens the log file (CRI-O uses the same).
_CTL_REOPEN_LOGS = b"2 0 0\n"


class OciError(Unknown):
    """The OCI runtime or conmon failed; the message carries their words. UNKNOWN, as containerd
    answers: it is most often a config this host cannot run, not a bug of the daemon."""


# `runc start` without the subprocess. `runc create` leaves `runc init` blocked opening
# <root>/<id>/exec.fifo for writing; all `runc start` does (runc 1.0/1.1, libcontainer
# linuxContainer.exec) is open that fifo for reading, read it to EOF (init writes "0", then
# execs the process, which closes its CLOEXEC write end) and unlink it (runc tells a created
# container from a running one by the fifo's presence). Doing that here saves a Go binary's
# start-up (~9 ms of a ~55 ms StartContainer). The trade-off: it relies on runc's internal
# layout rather than its CLI, so it is used only for a binary named runc, and whenever the
# fifo is not there or init is gone without having opened it, the `runc start` subprocess
# runs instead and reports the error in runc's words. crun has its own: _write_exec_fifo.
_EXEC_FIFO = "exec.fifo"
_FIFO_CHECK = 0.1  # how often to look at init while it has not opened the fifo


class _FifoUnusable(Exception):
    """The exec fifo cannot start this container; `<runtime> start` must run instead."""


def _init_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


async def _release_exec_fifo(fifo: str, pid: int) -> None:
    try:
        # Non-blocking: opening never waits for a writer, and until one has come and gone the
        # kernel reports neither data nor hang-up, so readiness means data or init's exec.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise _FifoUnusable() from None  # not created (or already started): runc says which
    data = b""
    deadline = time.monotonic() + COMMAND_TIMEOUT
    try:
        while True:
            try:
                await asyncio.wait_for(readable(fd), _FIFO_CHECK)
            except TimeoutError:
                if not data and _init_gone(pid):
                    raise _FifoUnusable() from None
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded("runc init did not exec the process in time") from None
                continue
            try:
                chunk = os.read(fd, 64)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(fifo)
    if not data:
        raise OciError("runc start: cannot start an already running container")


def _write_exec_fifo(fifo: str) -> None:
    """`crun start` without the subprocess (crun 1.x, libcrun_container_start): `crun create`
    leaves the init blocked reading <root>/<id>/exec.fifo; start opens it for writing, unlinks
    it (crun too tells created from running by its presence) and writes one byte, upon which
    the init execs the process. crun start does more only for a notify socket or poststart
    hooks, which CRI specs never carry. Saves crun's exec and nsenter's (~5 ms). No reader
    (init gone, or already started) raises _FifoUnusable: `crun start` then says why."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # ENXIO: no reader
    except OSError:
        raise _FifoUnusable() from None
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)
        os.write(fd, b"\0")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ExitStatus:
    code: int
    finished_at: int  # unix nanoseconds (mtime of the exit file)
    oom_killed: bool
    lost: bool = False  # no one recorded it: conmon died before the init (see lost_exit)


@dataclass(frozen=True)
class OciState:
    status: str  # creating | created | running | paused | stopped
    pid: int


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class BundlePaths:
    """Where conmon and the runtime keep a container's files, from the bundle dir."""

    def __init__(self, bundle: str) -> None:
        self.bundle = bundle
        self.config = os.path.join(bundle, "config.json")
        self.rootfs = os.path.join(bundle, "rootfs")
        self.conmon_pid = os.path.join(bundle, "conmon.pid")
        self.pidfile = os.path.join(bundle, "pidfile")
        self.ctl = os.path.join(bundle, "ctl")
        self.persist = os.path.join(bundle, "persist")
        self.exit_file = os.path.join(bundle, "persist", "exit")
        self.oom_file = os.path.join(bundle, "persist", "oom")
        self.conmon_log = os.path.join(bundle, "conmon.log")
        self.binds = os.path.join(bundle, "binds")  # host paths bound for a namespaced runtime


def release_mounts(bundle: str) -> None:
    """Undoes stage_mounts for the container of `bundle` (any handler); blocking."""
    mountns.release_binds(BundlePaths(bundle).binds)


def read_exit_status(bundle: str) -> ExitStatus | None:
    """The exit status conmon recorded, or None while the container has not exited."""
    paths = BundlePaths(bundle)
    try:
        with open(paths.exit_file) as f:
            text = f.read().strip()
            finished = os.fstat(f.fileno()).st_mtime_ns
    except FileNotFoundError:
        return None
    try:
        code = int(text)
    except ValueError:
        return None  # conmon writes atomically; an unreadable file is not ours to trust
    return ExitStatus(code=code, finished_at=finished, oom_killed=os.path.exists(paths.oom_file))


async def _init_exit(pid: int, deadline: float | None) -> None:
    """Returns once `pid` has exited or the deadline has passed. The caller saw no exit file,
    so the init is alive, a zombie, or reaped by conmon an instant ago (then pidfd_open fails);
    a pid reused in that instant would only make this wait out the deadline, after which the
    exit file decides."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(readable(pidfd), remaining)
    finally:
        os.close(pidfd)


def _pid_alive(pid: int) -> bool:
    """Whether `pid` still runs. A zombie has exited: conmon double-forks, so its exit waits on
    whatever init reaps orphans, and some never do."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        return not select.select([fd], [], [], 0)[0]  # readable once the process exits
    finally:
        os.close(fd)


def conmon_alive(bundle: str) -> bool:
    try:
        with open(BundlePaths(bundle).conmon_pid) as f:
            pid = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return False
    return pid > 0 and _pid_alive(pid)


def lost_exit(bundle: str, pid: int) -> ExitStatus | None:
    """The status of an init that exited with no monitor left to record it: conmon was killed
    (the OOM killer may pick it on hosts that deny it a negative oom_score_adj) and the init is
    gone too. Exit code 255, as for a lost shim. None while either still runs, or the exit file
    conmon wrote on its way out."""
    if (pid > 0 and _pid_alive(pid)) or conmon_alive(bundle):  # the init first: no file to read
        return None
    return read_exit_status(bundle) or ExitStatus(
        code=255, finished_at=time.time_ns(), oom_killed=False, lost=True
    )


class OciRuntime:
    """One runtime handler: a runc-compatible binary with its own state root."""

    def __init__(
        self,
        handler: str,
        binary: str,
        state_dir: str,
        conmon: str = CONMON,
        namespace: PrivateMountNamespace | None = None,
    ) -> None:
        self.handler = handler
        self.binary = binary
        # Every child that runs the runtime (conmon included) starts in this mount namespace.
        self.namespace = namespace
        self._enter: list[str] = namespace.enter if namespace is not None else []
        # Each handler keeps its container state under our state dir, so two daemons (tests)
        # never see each other's containers and a runc/crun pair never share a root.
        self.root = os.path.join(state_dir, "oci", handler)
        self.conmon = conmon
        # PATH lookups, remembered once found (a missing binary is looked up again next time).
        self._binary_path: str | None = None
        self._conmon_resolved: str | None = None

    @property
    def cgroup_controllers(self) -> frozenset[str] | None:
        """The v1 controllers this runtime can use, when it sees fewer than the daemon does
        (in its private mount namespace); None when it sees the host's cgroups as they are."""
        return self.namespace.controllers if self.namespace is not None else None

    def resolved_binary(self) -> str:
        if self._binary_path is None:
            self._binary_path = shutil.which(self.binary)
        if self._binary_path is None:
            raise FailedPrecondition(
                f"runtime handler {self.handler!r}: OCI runtime {self.binary!r} is not installed"
            )
        return self._binary_path

    def _conmon_path(self) -> str:
        if self._conmon_resolved is None:
            self._conmon_resolved = shutil.which(self.conmon)
        if self._conmon_resolved is None:
            raise FailedPrecondition(f"conmon ({self.conmon!r}) is not installed")
        return self._conmon_resolved

    def stage_mounts(self, spec: dict[str, Any], bundle: str) -> None:
        """Makes the spec's host paths reach a runtime in its own mount namespace (mountns.py);
        nothing to do for one on the host's. Undo with release_mounts. Blocking: mounts."""
        if self.namespace is not None:
            mountns.stage_binds(
                spec.get("mounts") or [], self.namespace.shared_dir, BundlePaths(bundle).binds
            )

    def has_state(self, container_id: str) -> bool:
        """Whether the runtime keeps a record of the container (runc and crun both keep one
        directory per container under --root); a stat, so no `state` subprocess is needed to
        know whether a `delete` is still due."""
        return os.path.isdir(os.path.join(self.root, container_id))

    def start_pending(self, container_id: str) -> bool:
        """Whether the container was created but never let go: runc and crun both keep the
        exec fifo until a start has read it, so with it still there the process never ran,
        even if the init has died since (killed, or its write to the fifo failed)."""
        return os.path.exists(os.path.join(self.root, container_id, _EXEC_FIFO))

    # ---- running the runtime binary ------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        """The command line of one runtime call (`exec ...`, `kill ...`), in the runtime's
        mount namespace when it has one: every caller that runs the runtime starts from here."""
        return [*self._enter, self.resolved_binary(), "--root", self.root, *args]

    async def _run(
        self, *args: str, stdin: bytes | None = None, limit: float = COMMAND_TIMEOUT
    ) -> tuple[int, bytes, bytes]:
        child = Child(self.argv(*args), stdin=stdin)
        try:
            return await asyncio.wait_for(child.communicate(), limit)
        except TimeoutError:
            raise DeadlineExceeded(
                f"{self.handler} {args[0]} did not finish within {limit:.0f}s"
            ) from None

    async def _check(self, *args: str, stdin: bytes | None = None) -> bytes:
        code, out, err = await self._run(*args, stdin=stdin)
        if code != 0:
            message = _runtime_message(err or out)
            if _is_not_exist(message):
                raise NotFound(f"{self.handler}: container {args[-1]!r} does not exist")
            raise OciError(f"{self.handler} {args[0]}: {message}")
        return out

    # ---- lifecycle -----------------------------------------------------------------------------

    async def create(
        self,
        container_id: str,
        bundle: str,
        log_path: str,
        *,
        terminal: bool = False,
        stdin: bool = False,
        stdin_once: bool = False,
    ) -> int:
        """Starts conmon, which runs `<runtime> create`; returns the init pid once created.
        With `terminal` conmon gives the runtime a console socket and logs what the container
        writes to its pty; with `stdin` the container's stdin is a pipe conmon holds open
        (until the first attached client leaves, with `stdin_once`), as CRI-O runs it."""
        paths = BundlePaths(bundle)
        os.makedirs(paths.persist, exist_ok=True)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        if log_path:
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
        args = [
            *self._enter,
            self._conmon_path(),
            "--api-version", "1",
            "--cid", container_id,
            "--cuuid", container_id,
            "--name", container_id,
            "--runtime", self.resolved_binary(),
            "--runtime-arg", f"--root={self.root}",
            "--bundle", bundle,
            "--container-pidfile", paths.pidfile,
            "--conmon-pidfile", paths.conmon_pid,
            "--persist-dir", paths.persist,
            "--log-path", f"k8s-file:{log_path}",
            "--socket-dir-path", bundle,
            "--full-attach",
            "--log-level", "error",
            *(["--terminal"] if terminal else []),
            *(["--stdin"] if stdin else []),
            *(["--leave-stdin-open"] if stdin and not stdin_once else []),
        ]  # fmt: skip
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            conmon_log = os.open(paths.conmon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                conmon = Child(
                    args,
                    capture=False,
                    stderr=conmon_log,
                    pass_fds=(write_fd,),
                    env={**_clean_env(), "_OCI_SYNCPIPE": str(write_fd)},
                    new_session=True,  # a signal to the daemon's group never reaches it
                    cwd=bundle,  # conmon also drops an `oom` file in its cwd, as under CRI-O
                )
            finally:
                os.close(conmon_log)
            os.close(write_fd)
            write_fd = -1
            await conmon.wait()  # conmon's first process exits as soon as it has forked
            try:
                raw = await asyncio.wait_for(_read_first_line(read_fd), CREATE_TIMEOUT)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"conmon did not report container {container_id} within {CREATE_TIMEOUT:.0f}s"
                ) from None
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            os.close(read_fd)
        return _parse_sync(raw, paths)

    async def start(self, container_id: str, pid: int = 0) -> None:
        """Lets the created container's init (`pid`, 0 if unknown) exec the process."""
        fifo = os.path.join(self.root, container_id, _EXEC_FIFO)
        kind = os.path.basename(self.resolved_binary())
        if pid > 0 and kind == "runc":
            with contextlib.suppress(_FifoUnusable):
                await _release_exec_fifo(fifo, pid)
                return
        if pid > 0 and kind == "crun":
            with contextlib.suppress(_FifoUnusable):
                _write_exec_fifo(fifo)
                return
        await self._check("start", container_id)

    async def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        """Sends `sig` to the init process (to all processes with all_processes). A container
        that has already stopped is not an error."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(sig)]
        code, out, err = await self._run(*args)
        if code != 0:
            message = _runtime_message(err or out)
            if _is_not_exist(message) or "not running" in message or "stopped" in message:
                return
            raise OciError(f"{self.handler} kill: {message}")

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """Deletes the runtime's record (and cgroup); absent already is success."""
        try:
            await self._check("delete", *(["--force"] if force else []), container_id)
        except NotFound:
            return

    async def state(self, container_id: str) -> OciState | None:
        code, out, err = await self._run("state", container_id)
        if code != 0:
            message = _runtime_message(err or out)
            # crun names the file it misses in a record cut short (its state dir half gone).
            if _is_not_exist(message) or os.path.join(self.root, container_id, "") in message:
                return None
            raise OciError(f"{self.handler} state: {_runtime_message(err or out)}")
        data = json.loads(out)
        return OciState(status=str(data.get("status", "")), pid=int(data.get("pid") or 0))

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Applies OCI linux.resources to a live container."""
        await self._check(
            "update", "--resources", "-", container_id, stdin=json.dumps(resources).encode()
        )

    async def wait_exit(self, bundle: str, within: float | None, pid: int = 0) -> ExitStatus | None:
        """Waits for conmon's exit file; None when `within` seconds pass first, a lost status when
        conmon is gone without writing one (lost_exit). Given the init's host `pid`, it sleeps on
        a pidfd until the init exits instead of polling, and polls only for the moment conmon
        takes to record it."""
        deadline = None if within is None else time.monotonic() + within
        if pid > 0 and read_exit_status(bundle) is None:
            await _init_exit(pid, deadline)
        delay = _EXIT_POLL_MIN
        while True:
            status = read_exit_status(bundle)
            if status is not None:
                return status
            if not conmon_alive(bundle):
                # No one will record the exit now: an init that outlived conmon is waited for
                # itself; then conmon's file if it wrote one on its way out, else a lost status.
                if pid > 0:
                    await _init_exit(pid, deadline)
                return lost_exit(bundle, pid)
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, _EXIT_POLL_MAX)

    @staticmethod
    def reset_bundle(bundle: str) -> None:
        """Drops what conmon and an aborted start left in the bundle (pid files, exit file,
        fifos, sockets, its log), keeping config.json and the rootfs mount point, so the
        container can be started afresh. Call only once conmon is gone."""
        keep = {"config.json", "rootfs", "binds"}  # mount points: never deleted through
        with os.scandir(bundle) as entries:
            for entry in entries:
                if entry.name in keep:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

    def reopen_log(self, bundle: str) -> None:
        """Asks conmon to reopen the container's log file (after kubelet rotated it)."""
        try:
            fd = os.open(BundlePaths(bundle).ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ENXIO, errno.ENOENT):  # no reader: conmon is gone
                raise FailedPrecondition("container monitor is not running") from None
            raise
        try:
            os.write(fd, _CTL_REOPEN_LOGS)
        finally:
            os.close(fd)

    # ---- exec ----------------------------------------------------------------------------------

    async def exec_sync(
        self,
        container_id: str,
        bundle: str,
        process: dict[str, Any],
        *,
        time_limit: float | None,
        max_output: int,
    ) -> ExecResult:
        """Runs `process` in the container and collects its output, each stream capped at
        `max_output` bytes (the rest is read and dropped so the process never blocks). On
        timeout the process is SIGKILLed by its host pid and DeadlineExceeded raised."""
        token = secrets.token_hex(6)
        pid_file = os.path.join(bundle, f"exec-{token}.pid")
        # The process spec travels in a memfd named by its /proc path: no file to write and
        # delete. runc opens the path before it starts anything in the container.
        spec_fd = os.memfd_create("process.json", os.MFD_CLOEXEC)
        try:
            os.write(spec_fd, json.dumps(process).encode())
            child = Child(
                self.argv(
                    "exec", "--process", f"/proc/self/fd/{spec_fd}", "--pid-file", pid_file,
                    container_id,
                ),
                pass_fds=(spec_fd,),
            )  # fmt: skip
        finally:
            os.close(spec_fd)
        collect = asyncio.ensure_future(child.communicate(max_output))
        try:
            code, stdout, stderr = await asyncio.wait_for(asyncio.shield(collect), time_limit)
        except TimeoutError:
            _kill_pid_file(pid_file)
            try:  # let runc exec reap its child, or the zombie outlives it
                await asyncio.wait_for(asyncio.shield(collect), 2.0)
            except Exception:
                child.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(collect, 5.0)
            raise DeadlineExceeded(
                f"command timed out after {time_limit:g}s and was killed"
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pid_file)
        return ExecResult(exit_code=code, stdout=stdout, stderr=stderr)


# ---- helpers -----------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    # No locale: conmon and runc print nothing localised, and the C locale saves conmon
    # loading locale files on every container start.
    keep = ("PATH", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


async def _read_first_line(fd: int) -> bytes:
    """conmon's first sync message (it keeps the pipe open afterwards, so no EOF to wait for);
    b"" if conmon closed the pipe without one."""
    os.set_blocking(fd, False)
    buf = bytearray()
    while b"\n" not in buf:
        await readable(fd)
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            continue
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _parse_sync(raw: bytes, paths: BundlePaths) -> int:
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        pid = int(message.get("data", -1))
        if pid > 0:
            return pid
        raise OciError(f"create failed: {_runtime_message(str(message.get('message', '')))}")
    detail = ""
    with contextlib.suppress(OSError), open(paths.conmon_log, errors="replace") as f:
        detail = f.read().strip()[-2000:]
    raise OciError(f"conmon exited without reporting the container: {detail or 'no output'}")


def _runtime_message(raw: bytes | str) -> str:
    """runc prints logrus lines (`time=… level=error msg="…"`) or plain text; keep the msg.
    Warnings (e.g. its cleanup's "cannot toggle freezer") only bury the cause, so when there
    are error-level lines, only those are kept."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    messages: list[str] = []
    errors: list[str] = []
    for line in text.strip().splitlines():
        if 'msg="' in line:
            msg = line.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
            messages.append(msg)
            if "level=error" in line or "level=fatal" in line:
                errors.append(msg)
        elif line.strip():
            messages.append(line.strip())
    return "; ".join(errors or messages) or "no error output"


def _is_not_exist(message: str) -> bool:
    lowered = message.lower()
    return "does not exist" in lowered or ("container" in lowered and "not found" in lowered)


def _kill_pid_file(pid_file: str) -> None:
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_mod.SIGKILL)

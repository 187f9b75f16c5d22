"""Shared fixtures: the real criruntime daemon on a temporary socket with temporary state.

`daemon` is a running daemon with a test config; `make_daemon(config_toml)` builds one with
extra TOML. Every daemon is stopped by its PID at teardown, and teardown checks it left no socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import pytest

from criruntime.api import MAX_MESSAGE
from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc

if TYPE_CHECKING:
    from tests.container.daemon_env import ImageSet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 15.0


@dataclass
class Daemon:
    """A criruntime daemon process under test, with generated gRPC clients."""

    base: str  # short temp dir (unix socket paths are limited to 108 bytes)
    extra_config: str = ""
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None

    @property
    def socket(self) -> str:
        return os.path.join(self.base, "cri.sock")

    @property
    def root(self) -> str:
        return os.path.join(self.base, "root")

    @property
    def state(self) -> str:
        return os.path.join(self.base, "state")

    @property
    def cni_conf_dir(self) -> str:
        return os.path.join(self.base, "net.d")

    @property
    def cni_bin_dir(self) -> str:
        return os.path.join(self.base, "cni-bin")

    @property
    def config_path(self) -> str:
        return os.path.join(self.base, "config.toml")

    @property
    def log_path(self) -> str:
        return os.path.join(self.base, "daemon.log")

    def write_config(self) -> None:
        os.makedirs(self.cni_conf_dir, exist_ok=True)
        os.makedirs(self.cni_bin_dir, exist_ok=True)
        with open(self.config_path, "w") as f:
            # Extra TOML first, so its top-level keys are not swallowed by the [cni] table.
            f.write(self.extra_config + "\n")
            if "[cni]" not in self.extra_config:
                # A private CNI dir keeps the host's /etc/cni/net.d out of the test.
                f.write(f'[cni]\nconf_dir = "{self.cni_conf_dir}"\n')
                f.write(f'bin_dirs = ["{self.cni_bin_dir}"]\n')

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "criruntime", "serve",
            "--config", self.config_path, "--socket", self.socket,
            "--root", self.root, "--state", self.state, "--log-level", "debug",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> Daemon:
        self.write_config()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=REPO)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not create its socket:\n{self.logs()}")
            time.sleep(0.02)
        # kubelet's CRI client takes messages up to 16 MiB both ways (gRPC's default is 4 MiB).
        limits = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
        self.channel = grpc.insecure_channel(f"unix://{self.socket}", options=limits)
        grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT)
        return self

    @property
    def runtime(self) -> api_grpc.RuntimeServiceStub:
        assert self.channel is not None, "daemon not started"
        return api_grpc.RuntimeServiceStub(self.channel)

    @property
    def image(self) -> api_grpc.ImageServiceStub:
        assert self.channel is not None, "daemon not started"
        return api_grpc.ImageServiceStub(self.channel)

    def logs(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signals the daemon by PID and waits; returns its exit code."""
        self._close_channel()
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> Daemon:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start()


# What `make test` installs (hack/install-deps.sh runtime + test groups). A missing piece fails
# the session at once: a test that silently skips would hide exactly the breakage it guards.
REQUIRED_TOOLS = [
    "runc", "crun", "conmon", "catatonit", "ip", "iptables", "iptables-legacy", "iptables-nft",
    "nsenter", "docker-registry", "htpasswd", "openssl",
]  # fmt: skip
REQUIRED_FILES = ["/bin/busybox", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local"]


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    missing += [f for f in REQUIRED_FILES if not os.path.exists(f)]
    problems = [f"missing: {', '.join(missing)}"] if missing else []
    if os.geteuid() != 0:
        problems.append("not root (tests make namespaces, mounts, veths, cgroups)")
    if problems:
        raise pytest.UsageError(
            "the test suite needs what `make test` installs; " + "; ".join(problems)
        )


def _new_base() -> str:
    return tempfile.mkdtemp(prefix="crir-", dir="/tmp")


def _teardown(d: Daemon) -> None:
    if d.proc is not None and d.proc.poll() is None:
        d.stop()
    left = os.path.exists(d.socket)
    shutil.rmtree(d.base, ignore_errors=True)
    assert not left, f"daemon left its socket {d.socket} behind"


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(config_toml: str = "", args: list[str] | None = None, start: bool = True) -> Daemon:
        d = Daemon(base=_new_base(), extra_config=config_toml, extra_args=args or [])
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        _teardown(d)


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    """A fresh daemon for one test."""
    return make_daemon()


def _default_pod_cgroups() -> list[str]:
    """The daemon's parent cgroup for pods that name none (/criruntime), in every hierarchy."""
    return [
        os.path.join(root, "criruntime")
        for root in (os.path.join("/sys/fs/cgroup", h) for h in os.listdir("/sys/fs/cgroup"))
        if os.path.isdir(os.path.join(root, "criruntime"))
    ]


@pytest.fixture(scope="session", autouse=True)
def _remove_default_pod_cgroup_parent() -> Iterator[None]:
    """Test daemons create /criruntime (kept across daemon restarts, as containerd keeps its
    parent); the session removes it again unless it was there before."""
    existed = bool(_default_pod_cgroups())
    yield
    if not existed:
        for path in _default_pod_cgroups():
            with contextlib.suppress(OSError):  # not empty: something leaked; tests say what
                os.rmdir(path)


@pytest.fixture(scope="session")
def imgs() -> Iterator[ImageSet]:
    """busybox-static images pushed to one docker-registry on 127.0.0.1 for the whole session."""
    from tests.container.daemon_env import pushed_images

    workdir = tempfile.mkdtemp(prefix="crir-reg-")
    try:
        with pushed_images(workdir) as pushed:
            yield pushed
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_daemon() -> Iterator[Daemon]:
    """One daemon for tests that only read node-level state; saves a start per test."""
    d = Daemon(base=_new_base()).start()
    yield d
    _teardown(d)

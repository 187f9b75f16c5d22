"""Helpers for container tests through the real daemon: busybox-static images pushed to a local
docker-registry on 127.0.0.1, host-network pods, container configs, and a last-resort cleanup
that kills leftover processes by the PIDs conmon recorded (never by name)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.image import images
from tests.image.layers import Entry, directory, file, symlink
from tests.image.registry_env import Registry, start_registry

APPLETS = [
    "sh", "echo", "sleep", "cat", "id", "true", "false", "ls", "env", "pwd", "hostname",
    "yes", "head", "kill", "touch", "printf", "seq", "grep", "tail", "ps", "test", "[",
]  # fmt: skip
NODE = api.NamespaceMode.NODE


def busybox_layer(marker: str = "busybox") -> list[Entry]:
    with open(images.BUSYBOX, "rb") as f:
        busybox = f.read()
    return [
        directory("bin"),
        file("bin/busybox", busybox, mode=0o755),
        *(symlink(f"bin/{a}", "busybox") for a in APPLETS),
        directory("etc"),
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
        file("etc/group", b"root:x:0:\napp:x:1000:\n"),
        file("etc/marker", f"{marker}\n".encode()),
        directory("tmp", mode=0o1777),
        directory("root", mode=0o700),
    ]


def busybox_image(cmd: list[str] | None, marker: str = "busybox") -> images.Image:
    return images.build(
        [(busybox_layer(marker), "gzip")],
        extra_config={"Cmd": cmd, "Env": ["PATH=/bin", "FROM_IMAGE=1"], "Volumes": None},
    )


@dataclass
class ImageSet:
    registry: Registry
    busybox: images.Image
    nocmd: images.Image
    other: images.Image

    @property
    def busybox_ref(self) -> str:
        return f"{self.registry.host}/ctest/busybox:1"

    @property
    def nocmd_ref(self) -> str:
        return f"{self.registry.host}/ctest/nocmd:1"

    @property
    def other_ref(self) -> str:
        return f"{self.registry.host}/ctest/other:1"

    @property
    def busybox_repo_digest(self) -> str:
        return f"{self.registry.host}/ctest/busybox@{self.busybox.digest}"


@contextlib.contextmanager
def pushed_images(workdir: str) -> Iterator[ImageSet]:
    registry = start_registry(workdir, os.path.join(workdir, "storage"), "ctest")
    try:
        imgs = ImageSet(
            registry,
            busybox_image(["sh"]),
            busybox_image(None, marker="nocmd"),
            busybox_image(["sh"], marker="other"),
        )
        images.push(registry.url, "ctest/busybox", imgs.busybox, ["1"])
        images.push(registry.url, "ctest/nocmd", imgs.nocmd, ["1"])
        images.push(registry.url, "ctest/other", imgs.other, ["1"])
        yield imgs
    finally:
        registry.stop()


def pull(daemon: Daemon, ref: str) -> str:
    return str(
        daemon.image.PullImage(
            api.PullImageRequest(image=api.ImageSpec(image=ref)), timeout=60
        ).image_ref
    )


# ---- pods and containers ----------------------------------------------------------------------


def host_pod_config(daemon: Daemon, name: str | None = None, **kw: Any) -> api.PodSandboxConfig:
    """A host-network pod (no CNI) with its own IPC namespace and a log directory."""
    name = name or "pod-" + secrets.token_hex(3)
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="ctest", uid=secrets.token_hex(8)),
        log_directory=os.path.join(daemon.base, "logs", name),
        **kw,
    )
    ns = config.linux.security_context.namespace_options
    ns.network = NODE
    ns.pid = api.NamespaceMode.CONTAINER
    return config


def container_config(image: str, name: str = "c", **kw: Any) -> api.ContainerConfig:
    kw.setdefault("log_path", f"{name}.log")
    return api.ContainerConfig(
        metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=image), **kw
    )


def sh(script: str) -> dict[str, Any]:
    return {"command": ["sh", "-c", script]}


@dataclass
class Cluster:
    """Pods and containers one test made on one daemon; `cleanup` removes them via RPC."""

    daemon: Daemon
    handler: str = ""  # the pods' runtime handler ("" for the daemon's default)
    pods: dict[str, api.PodSandboxConfig] = field(default_factory=dict)
    containers: list[str] = field(default_factory=list)

    @property
    def rt(self) -> Any:
        return self.daemon.runtime

    def run_pod(self, config: api.PodSandboxConfig | None = None) -> str:
        config = config or host_pod_config(self.daemon)
        pod_id = str(
            self.rt.RunPodSandbox(
                api.RunPodSandboxRequest(config=config, runtime_handler=self.handler), timeout=30
            ).pod_sandbox_id
        )
        self.pods[pod_id] = config
        return pod_id

    def create(self, pod_id: str, config: api.ContainerConfig) -> str:
        cid = str(
            self.rt.CreateContainer(
                api.CreateContainerRequest(
                    pod_sandbox_id=pod_id, config=config, sandbox_config=self.pods[pod_id]
                ),
                timeout=30,
            ).container_id
        )
        self.containers.append(cid)
        return cid

    def start(self, cid: str) -> None:
        self.rt.StartContainer(api.StartContainerRequest(container_id=cid), timeout=30)

    def run(self, pod_id: str, config: api.ContainerConfig) -> str:
        cid = self.create(pod_id, config)
        self.start(cid)
        return cid

    def status(self, cid: str, verbose: bool = False) -> api.ContainerStatusResponse:
        response: api.ContainerStatusResponse = self.rt.ContainerStatus(
            api.ContainerStatusRequest(container_id=cid, verbose=verbose), timeout=10
        )
        return response

    def info(self, cid: str) -> dict[str, Any]:
        return dict(json.loads(self.status(cid, verbose=True).info["info"]))

    def stop(self, cid: str, timeout: int = 0) -> None:
        self.rt.StopContainer(
            api.StopContainerRequest(container_id=cid, timeout=timeout), timeout=60
        )

    def remove(self, cid: str) -> None:
        self.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid), timeout=60)

    def exec(self, cid: str, *cmd: str, timeout: int = 0) -> api.ExecSyncResponse:
        response: api.ExecSyncResponse = self.rt.ExecSync(
            api.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=timeout), timeout=60
        )
        return response

    def list(self, f: api.ContainerFilter | None = None) -> set[str]:
        return {
            c.id
            for c in self.rt.ListContainers(
                api.ListContainersRequest(filter=f), timeout=10
            ).containers
        }

    def wait_state(
        self, cid: str, state: api.ContainerState.ValueType, timeout: float = 10.0
    ) -> api.ContainerStatus:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(cid).status
            if st.state == state:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"container {cid[:12]} stuck in {st.state}, wanted {state}")
            time.sleep(0.02)

    def log_file(self, pod_id: str, name: str = "c") -> str:
        return os.path.join(self.pods[pod_id].log_directory, f"{name}.log")

    def cleanup(self) -> None:
        """RemoveContainer then RemovePodSandbox for everything made here. A daemon a failed
        test left killed is started again first, so pods (cgroups, mounts) go the normal way."""
        d = self.daemon
        if d.proc is None:
            return
        if d.proc.poll() is not None:
            try:
                d.start()
            except RuntimeError:
                return
        for cid in reversed(self.containers):
            with contextlib.suppress(grpc.RpcError):
                self.remove(cid)
        for pod_id in self.pods:
            with contextlib.suppress(grpc.RpcError):
                self.rt.RemovePodSandbox(
                    api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60
                )


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def read_log(path: str) -> list[tuple[str, str, str]]:
    """CRI log lines as (stream, tag, text), checking the timestamp field parses."""
    out: list[tuple[str, str, str]] = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            stamp, stream, tag, text = line.rstrip("\n").split(" ", 3)
            assert stamp[4] == "-" and "T" in stamp, line
            out.append((stream, tag, text))
    return out


def mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def cgroup_path(pid: int, controller: str = "memory") -> str:
    """The cgroup (of a cgroup v1 `controller`) `pid` is in, as /proc/PID/cgroup names it."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    raise AssertionError(f"{pid} has no {controller} cgroup")


def cgroup_file(pid: int, controller: str, name: str) -> str:
    """A file of `pid`'s cgroup of `controller`, stripped."""
    with open(f"/sys/fs/cgroup/{controller}{cgroup_path(pid, controller)}/{name}") as f:
        return f.read().strip()


def cgroup_procs(pid: int, controller: str = "memory") -> list[int]:
    """PIDs in the same cgroup (of `controller`) as `pid`."""
    return [int(p) for p in cgroup_file(pid, controller, "cgroup.procs").split()]


def pid_alive(pid: int) -> bool:
    """True for a live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def module_daemon(*refs: str) -> Iterator[Daemon]:
    """A daemon shared by a module's tests, `refs` pulled; stopped and cleaned up after."""
    from tests.conftest import _new_base, _teardown

    d = Daemon(base=_new_base()).start()
    try:
        for ref in refs:
            pull(d, ref)
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        force_cleanup(d)
        _teardown(d)


def force_cleanup(daemon: Daemon) -> None:
    """Last resort after the RPCs: SIGKILL container and conmon PIDs from their pidfiles, drop
    the runtimes' state (crun deletes from the host's mount namespace too), unmount whatever is
    left under the daemon's dirs."""
    bundles = os.path.join(daemon.state, "containers")
    for cid in os.listdir(bundles) if os.path.isdir(bundles) else []:
        for name in ("pidfile", "conmon.pid"):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(bundles, cid, name)) as f:
                    pid = int(f.read().strip() or 0)
                if pid > 0:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
    oci_root = os.path.join(daemon.state, "oci")
    for handler in os.listdir(oci_root) if os.path.isdir(oci_root) else []:
        for cid in os.listdir(os.path.join(oci_root, handler)):
            subprocess.run(
                [
                    "crun" if handler == "crun" else "runc",
                    *("--root", os.path.join(oci_root, handler), "delete", "-f", cid),
                ],
                capture_output=True,
                check=False,
            )
    for target in sorted(mounts_under(daemon.base), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)

"""Fixtures for the container layer: a busybox image layer built here, and a ContainerService
on temporary root/state dirs with in-test pod and image lookups (no daemon, no registry).

Teardown removes every container through the service, then force-deletes whatever the runtime
still knows, unmounts rootfs mounts and removes the test's cgroups, even when a test failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.config import AUTO_RUNTIME, Config
from criruntime.container import container_create, container_remove, container_start
from criruntime.container.providers import ImageConfig, ImageInfo, PodInfo
from criruntime.container.service import ContainerService
from criruntime.errors import NotFound
from criruntime.store.db import Database

T = TypeVar("T")
BUSYBOX = "/bin/busybox"
APPLETS = [
    "sh", "echo", "sleep", "cat", "id", "true", "false", "ls", "env", "pwd", "hostname",
    "yes", "head", "kill", "mount", "touch", "dd", "printf", "seq", "grep", "tail",
]  # fmt: skip
CGROUP_PARENT = "/criruntime-test"
# The container lifecycle runs on both handlers: crun (the default where its probe passes, in
# its private mount namespace here) and runc.
HANDLERS = ["crun", "runc"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs one verb; like the daemon's long-lived loop, lets the background work it started
    (reaping an exited container) finish rather than cancelling it with the loop."""

    async def main() -> T:
        try:
            return await coro
        finally:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    return asyncio.run(main())


def build_busybox_layer(path: str) -> None:
    os.makedirs(os.path.join(path, "bin"))
    os.makedirs(os.path.join(path, "etc"))
    os.makedirs(os.path.join(path, "tmp"), mode=0o1777)
    shutil.copy(BUSYBOX, os.path.join(path, "bin", "busybox"))
    for applet in APPLETS:
        os.link(os.path.join(path, "bin", "busybox"), os.path.join(path, "bin", applet))
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/sh\n"
                "app:x:1000:1000::/home/app:/bin/sh\n")  # fmt: skip
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\nwww:x:33:\napp:x:1000:\nextra:x:2000:app,www\n")


@pytest.fixture(scope="session")
def busybox_layer() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="crir-layer-")
    layer = os.path.join(base, "diff")
    build_busybox_layer(layer)
    yield layer
    shutil.rmtree(base, ignore_errors=True)


@dataclass
class Env:
    base: str
    config: Config
    db: Database
    service: ContainerService
    pod: PodInfo
    images: dict[str, ImageInfo] = field(default_factory=dict)

    def container_config(self, name: str = "c", **kwargs: Any) -> api.ContainerConfig:
        kwargs.setdefault("image", api.ImageSpec(image="busybox"))
        kwargs.setdefault("log_path", f"{name}.log")
        return api.ContainerConfig(metadata=api.ContainerMetadata(name=name), **kwargs)

    def create(self, config: api.ContainerConfig) -> str:
        request = api.CreateContainerRequest(
            pod_sandbox_id=self.pod.id, config=config, sandbox_config=self.pod.config
        )
        return run(container_create.create_container(self.service, request)).container_id

    def run_container(self, config: api.ContainerConfig) -> str:
        cid = self.create(config)
        run(
            container_start.start_container(
                self.service, api.StartContainerRequest(container_id=cid)
            )
        )
        return cid

    def log_file(self, name: str = "c") -> str:
        return os.path.join(self.pod.log_directory, f"{name}.log")

    def wait_exited(self, cid: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service.get(cid).state.value == "EXITED":
                return
            time.sleep(0.02)
        raise AssertionError(f"container {cid} did not exit")


def make_env(base: str, layer: str, handler: str = "") -> Env:
    config = Config(
        root=os.path.join(base, "root"),
        state=os.path.join(base, "state"),
        default_runtime=handler or AUTO_RUNTIME,  # a named handler needs no probe
    )
    os.makedirs(config.root)
    os.makedirs(config.state)
    db = Database(os.path.join(config.root, "criruntime.db"))
    pod_config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="pod", namespace="ns", uid="uid-1"),
        log_directory=os.path.join(base, "logs"),
    )
    pod = PodInfo(
        id="p" * 64, config=pod_config, ready=True, runtime_handler=handler,
        cgroup_parent=CGROUP_PARENT, log_directory=os.path.join(base, "logs"),
    )  # fmt: skip
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO pods (id, name_key, state, created_at, config, runtime, data)"
            " VALUES (?, ?, 'READY', 0, ?, 'runc', '{}')",
            (pod.id, "pod_ns_uid-1_0", pod_config.SerializeToString()),
        )
    env_holder: dict[str, Env] = {}

    async def pods(pod_id: str) -> PodInfo:
        if pod_id != pod.id:
            raise NotFound(f"pod sandbox {pod_id!r} not found")
        return env_holder["env"].pod

    async def images(ref: str) -> ImageInfo:
        found = env_holder["env"].images.get(ref)
        if found is None:
            raise NotFound(f"image {ref!r} not found")
        return found

    service = ContainerService(config, db, pods=pods, images=images)
    env = Env(base=base, config=config, db=db, service=service, pod=pod)
    env.images["busybox"] = ImageInfo(
        id="sha256:" + "b" * 64,
        config=ImageConfig(env=["PATH=/bin", "FROM_IMAGE=1"], cmd=["sh"]),
        layer_dirs=[layer],
        repo_tags=["docker.io/library/busybox:latest"],
        repo_digests=["docker.io/library/busybox@sha256:" + "d" * 64],
    )
    env_holder["env"] = env
    return env


def cleanup_env(env: Env) -> None:
    service = env.service
    for container in service.store.list():
        with contextlib.suppress(Exception):
            run(container_remove.remove(service, container.id))
    for runtime in service.runtimes.values():
        for cid in os.listdir(runtime.root) if os.path.isdir(runtime.root) else []:
            with contextlib.suppress(Exception):
                run(runtime.delete(cid, force=True))
    service.runtime_set.close()
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for target in sorted((m for m in mounts if m.startswith(env.base)), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    for controller in os.listdir("/sys/fs/cgroup"):
        path = os.path.join("/sys/fs/cgroup", controller, CGROUP_PARENT.lstrip("/"))
        if os.path.isdir(path):
            for child in os.listdir(path):
                if os.path.isdir(os.path.join(path, child)):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(path, child))
            with contextlib.suppress(OSError):
                os.rmdir(path)
    env.db.close()
    shutil.rmtree(env.base, ignore_errors=True)


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def env(busybox_layer: str, handler: str) -> Iterator[Env]:
    base = tempfile.mkdtemp(prefix="crir-c-", dir="/tmp")
    e = make_env(base, busybox_layer, handler)
    try:
        yield e
    finally:
        cleanup_env(e)

"""Session fixtures: test images pushed once into a local docker-registry on 127.0.0.1, plus
the same storage served behind htpasswd basic auth and behind our token server."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from criruntime import config as config_mod
from criruntime.image.registry import RegistryOptions
from criruntime.image.service import ImageService
from criruntime.store.db import Database
from tests.image import images
from tests.image.layers import directory, file
from tests.image.registry_env import Registry, TokenServer, htpasswd, start_registry

T = TypeVar("T")

USER_VARIANTS = {
    "uid": "1002",
    "name": "www-data",
    "uidgid": "1003:1004",
    "namegid": "www-data:1004",
}
MANY_LAYERS = 128


@dataclass
class Catalog:
    workdir: str
    storage: str
    plain: Registry
    multi: images.Image
    multiarch_amd64: images.Image
    multiarch_index_digest: str
    users: dict[str, images.Image]
    docker: images.Image
    many: images.Image
    _extra: list[Any] = field(default_factory=list)


def _tiny(tag: str, user: str = "", arch: str = "amd64", kind: str = "gzip") -> images.Image:
    layer = [directory("etc"), file("etc/marker", f"{tag}\n".encode())]
    return images.build([(layer, kind)], user=user, arch=arch)


@pytest.fixture(scope="session")
def catalog() -> Iterator[Catalog]:
    workdir = tempfile.mkdtemp(prefix="crir-reg-")
    storage = os.path.join(workdir, "storage")
    plain = start_registry(workdir, storage, "plain")
    try:
        multi = images.multilayer_image()
        images.push(plain.url, "testimg/multi", multi, ["1", "2", "3"])
        amd64, arm64 = _tiny("amd64"), _tiny("arm64", arch="arm64")
        images.push(plain.url, "testimg/multiarch", amd64, [])
        images.push(plain.url, "testimg/multiarch", arm64, [])
        body, digest = images.index({"linux/arm64/v8": arm64, "linux/amd64": amd64})
        images.push_manifest(plain.url, "testimg/multiarch", "latest", body, images.OCI_INDEX)
        users = {tag: _tiny(tag, user=user) for tag, user in USER_VARIANTS.items()}
        for tag, img in users.items():
            images.push(plain.url, "testimg/user", img, [tag])
        docker = images.build([([directory("etc"), file("etc/docker", b"d")], "gzip")], docker=True)
        images.push(plain.url, "testimg/docker", docker, ["latest"])
        many = images.build(
            [([file(f"f{i:03d}", f"{i}".encode())], "none") for i in range(MANY_LAYERS)]
        )
        images.push(plain.url, "testimg/many", many, ["latest"])
        yield Catalog(workdir, storage, plain, multi, amd64, digest, users, docker, many)
    finally:
        plain.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def basic_registry(catalog: Catalog) -> Iterator[Registry]:
    path = htpasswd(catalog.workdir)
    reg = start_registry(
        catalog.workdir,
        catalog.storage,
        "basic",
        f"auth:\n  htpasswd:\n    realm: test\n    path: {path}\n",
    )
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(catalog: Catalog) -> Iterator[tuple[Registry, TokenServer]]:
    server = TokenServer(catalog.workdir)
    reg = start_registry(catalog.workdir, catalog.storage, "token", server.auth_yaml())
    yield reg, server
    reg.stop()
    server.stop()


@dataclass
class Harness:
    """An in-process ImageService on a temp root; `run` drives its coroutines."""

    root: str
    config: config_mod.Config
    db: Database
    svc: ImageService
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(
        toml: dict[str, Any] | None = None, root: str | None = None, **options: Any
    ) -> Harness:
        root = root or tempfile.mkdtemp(prefix="crir-img-")
        cfg = config_mod.from_dict({"root": root, **(toml or {})})
        db = Database(os.path.join(root, "criruntime.db"))
        loop = asyncio.new_event_loop()
        reg_options = RegistryOptions.from_config(cfg)
        if options:
            import dataclasses

            reg_options = dataclasses.replace(reg_options, **options)
        svc = ImageService(cfg, db, reg_options)
        h = Harness(root, cfg, db, svc, loop)
        made.append(h)
        return h

    yield make
    for h in made:
        h.run(h.svc.close())
        # Shared layer downloads outlive a pull that failed on another layer; end them here.
        pending = asyncio.all_tasks(h.loop)
        for task in pending:
            task.cancel()
        if pending:
            h.run(asyncio.wait(pending))
        h.loop.close()
        h.db.close()
        shutil.rmtree(h.root, ignore_errors=True)


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()

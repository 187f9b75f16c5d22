"""HTTPS registries with a per-registry CA and client certificates (certs.d, docker layout), and
blob redirects (as S3-backed registries send), against docker-registry on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import Unavailable
from criruntime.image.content_store import DigestMismatch
from tests.conftest import Daemon
from tests.image.conftest import Catalog, Harness
from tests.image.registry_env import (
    RedirectingRegistry,
    Registry,
    TlsFiles,
    make_tls_files,
    start_registry,
)

IMAGE = "testimg/docker:latest"  # one small layer


@pytest.fixture(scope="module")
def tls_files() -> Iterator[TlsFiles]:
    directory = tempfile.mkdtemp(prefix="crir-tls-")
    try:
        yield make_tls_files(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_registry(catalog: Catalog, tls_files: TlsFiles) -> Iterator[Registry]:
    reg = start_registry(catalog.workdir, catalog.storage, "tls", tls=tls_files)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def mtls_registry(catalog: Catalog, tls_files: TlsFiles) -> Iterator[Registry]:
    reg = start_registry(catalog.workdir, catalog.storage, "mtls", tls=tls_files, client_auth=True)
    yield reg
    reg.stop()


@pytest.fixture
def certs_dir() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="crir-certs.d-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _install(certs_dir: str, host: str, files: dict[str, str]) -> None:
    os.makedirs(os.path.join(certs_dir, host), exist_ok=True)
    for name, source in files.items():
        shutil.copy(source, os.path.join(certs_dir, host, name))


def _pull(h: Harness, image: str) -> str:
    req = api.PullImageRequest(image=api.ImageSpec(image=image))
    return h.run(h.svc.pull_image(req)).image_ref


def _listed(h: Harness) -> list[api.Image]:
    return list(h.run(h.svc.list_images(api.ListImagesRequest())).images)


def test_tls_registry_on_loopback_needs_its_ca(
    make_daemon: Callable[..., Daemon],
    catalog: Catalog,
    tls_registry: Registry,
    tls_files: TlsFiles,
    certs_dir: str,
) -> None:
    # 127.0.0.1 is "insecure" (plain HTTP allowed), yet HTTPS is tried first and verified.
    d = make_daemon(f'[registry]\ncerts_dir = "{certs_dir}"\n')
    ref = f"{tls_registry.host}/{IMAGE}"
    req = api.PullImageRequest(image=api.ImageSpec(image=ref))
    with pytest.raises(grpc.RpcError) as e:
        d.image.PullImage(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    details = e.value.details() or ""
    assert "certificate verif" in details and tls_registry.host in details, details
    assert os.path.join(certs_dir, tls_registry.host) in details  # where the CA belongs
    # The daemon keeps serving, and the CA dropped into certs.d is used without a restart.
    assert list(d.image.ListImages(api.ListImagesRequest()).images) == []
    _install(certs_dir, tls_registry.host, {"ca.crt": tls_files.ca_cert})
    assert d.image.PullImage(req, timeout=30).image_ref == catalog.docker.config_digest
    (image,) = d.image.ListImages(api.ListImagesRequest()).images
    assert list(image.repo_tags) == [ref]


def test_client_certificate_from_certs_dir(
    make_harness: Callable[..., Harness],
    catalog: Catalog,
    mtls_registry: Registry,
    tls_files: TlsFiles,
    certs_dir: str,
) -> None:
    # A single retry would sleep 30 s: the refusal must come back without one.
    h = make_harness({"registry": {"certs_dir": certs_dir}}, retries=3, backoff=30.0)
    ref = f"{mtls_registry.host}/{IMAGE}"
    _install(certs_dir, mtls_registry.host, {"ca.crt": tls_files.ca_cert})
    started = time.monotonic()
    with pytest.raises(Unavailable) as e:  # the registry refuses the handshake: "bad certificate"
        _pull(h, ref)
    assert "rejected this client's TLS certificate" in str(e.value), e.value
    assert os.path.join(certs_dir, mtls_registry.host) in str(e.value)
    assert time.monotonic() - started < 20
    assert _listed(h) == []
    _install(
        certs_dir,
        mtls_registry.host,
        {"client.cert": tls_files.client_cert, "client.key": tls_files.client_key},
    )
    assert _pull(h, ref) == catalog.docker.config_digest


@pytest.fixture
def redirecting(catalog: Catalog) -> Iterator[RedirectingRegistry]:
    front = RedirectingRegistry(catalog.plain.url)
    yield front
    front.stop()


def test_blob_redirects_followed(
    harness: Harness, catalog: Catalog, redirecting: RedirectingRegistry
) -> None:
    assert _pull(harness, f"{redirecting.host}/{IMAGE}") == catalog.docker.config_digest
    blobs = len(catalog.docker.blobs)  # config and layer
    assert redirecting.redirects == blobs and redirecting.blob_bodies_served == 0


def test_blob_redirect_to_wrong_content_fails(
    harness: Harness, catalog: Catalog, redirecting: RedirectingRegistry
) -> None:
    redirecting.corrupt = True
    with pytest.raises(DigestMismatch) as e:
        _pull(harness, f"{redirecting.host}/{IMAGE}")
    assert "sha256:" in str(e.value)
    assert redirecting.corrupt_hits >= 1
    assert _listed(harness) == []
    assert list(harness.svc.layers.chain_ids()) == []

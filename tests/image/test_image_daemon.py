"""The ImageService over gRPC against the real daemon: codes, crictl-visible behaviour, kill -9."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.image.conftest import Catalog
from tests.image.registry_env import SlowProxy


def spec(image: str) -> api.ImageSpec:
    return api.ImageSpec(image=image)


def test_image_rpcs(daemon: Daemon, catalog: Catalog) -> None:
    img = daemon.image
    ref = f"{catalog.plain.host}/testimg/multi:1"
    image_id = img.PullImage(api.PullImageRequest(image=spec(ref))).image_ref
    assert image_id == catalog.multi.config_digest
    (listed,) = img.ListImages(api.ListImagesRequest()).images
    assert listed.id == image_id and list(listed.repo_tags) == [ref]
    filtered = img.ListImages(api.ListImagesRequest(filter=api.ImageFilter(image=spec(ref))))
    assert [i.id for i in filtered.images] == [image_id]
    st = img.ImageStatus(api.ImageStatusRequest(image=spec(image_id), verbose=True))
    assert st.image == listed and "imageSpec" in st.info["info"]
    fs = img.ImageFsInfo(api.ImageFsInfoRequest()).image_filesystems[0]
    assert fs.used_bytes.value > 1_000_000 and fs.fs_id.mountpoint.startswith(daemon.root)
    img.RemoveImage(api.RemoveImageRequest(image=spec(ref)))
    assert list(img.ListImages(api.ListImagesRequest()).images) == []
    assert not img.ImageStatus(api.ImageStatusRequest(image=spec(ref))).HasField("image")
    img.RemoveImage(api.RemoveImageRequest(image=spec(ref)))  # absent: OK


def test_error_codes(daemon: Daemon, catalog: Catalog) -> None:
    with pytest.raises(grpc.RpcError) as e:
        daemon.image.PullImage(api.PullImageRequest(image=spec("Not/Valid")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lowercase" in (e.value.details() or "")
    with pytest.raises(grpc.RpcError) as e:
        daemon.image.PullImage(api.PullImageRequest(image=spec(f"{catalog.plain.host}/no/such")))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
def slow_proxy(catalog: Catalog) -> Iterator[SlowProxy]:
    proxy = SlowProxy(catalog.plain.url)
    yield proxy
    proxy.stop()


def test_kill9_mid_pull_leaves_no_half_image(
    make_daemon: Callable[..., Daemon], catalog: Catalog, slow_proxy: SlowProxy
) -> None:
    # The registry host is served through a mirror that trickles blobs.
    toml = f'[registry.mirrors."{catalog.plain.host}"]\nendpoints = ["{slow_proxy.url}"]\n'
    d = make_daemon(toml)
    ref = f"{catalog.plain.host}/testimg/multi:1"
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            d.image.PullImage(api.PullImageRequest(image=spec(ref)), timeout=60)
        except grpc.RpcError as e:
            errors.append(e)

    t = threading.Thread(target=pull, daemon=True)
    t.start()
    ingest = os.path.join(d.root, "images", "ingest")
    deadline = time.monotonic() + 20
    while not (os.path.isdir(ingest) and os.listdir(ingest)):
        assert time.monotonic() < deadline, "pull never started downloading"
        time.sleep(0.05)
    d.kill9()
    t.join(10)
    assert errors, "the pull should have failed with the daemon"
    slow_proxy.slow = False
    d.start()
    assert list(d.image.ListImages(api.ListImagesRequest()).images) == []
    assert os.listdir(ingest) == []  # crash leftovers collected at start
    image_id = d.image.PullImage(api.PullImageRequest(image=spec(ref)), timeout=60).image_ref
    assert image_id == catalog.multi.config_digest

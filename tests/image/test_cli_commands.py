"""`criruntime images import` / `images ls` while the daemon runs on the same root."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from criruntime import config as config_mod
from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.image.cli_commands import format_images, import_image, list_images
from tests.conftest import Daemon
from tests.image import images
from tests.image.layers import directory, file


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def oci_layout(path: Path, img: images.Image, name: str) -> None:
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        desc = {
            "mediaType": img.media_type,
            "digest": img.digest,
            "size": len(img.manifest),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": "1",
            },
        }
        _add(tar, "index.json", json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode())
        for digest, data in {**img.blobs, img.digest: img.manifest}.items():
            _add(tar, "blobs/sha256/" + digest.removeprefix("sha256:"), data)


def docker_archive(path: Path, img: images.Image, tags: list[str]) -> None:
    raw_layers = []
    with tarfile.open(path, "w") as tar:
        for i, digest in enumerate(img.layer_digests):
            name = f"layer{i}/layer.tar"
            _add(tar, name, img.blobs[digest])
            raw_layers.append(name)
        config_name = img.config_digest.removeprefix("sha256:") + ".json"
        _add(tar, config_name, img.blobs[img.config_digest])
        entry = [{"Config": config_name, "RepoTags": tags, "Layers": raw_layers}]
        _add(tar, "manifest.json", json.dumps(entry).encode())


def test_import_while_daemon_runs(make_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    d = make_daemon()
    cfg = config_mod.from_dict({"root": d.root})
    oci_img = images.build([([directory("etc"), file("etc/oci", b"1")], "gzip")], user="1002")
    docker_img = images.build(
        [([directory("etc"), file("etc/docker", b"2")], "none")], user="www-data"
    )
    oci_layout(tmp_path / "oci.tar", oci_img, "example.com/airgap/oci:1")
    docker_archive(
        tmp_path / "docker.tar", docker_img, ["airgap/docker:v2", "airgap/docker:latest"]
    )

    assert import_image(cfg, str(tmp_path / "oci.tar")) == [oci_img.config_digest]
    assert import_image(cfg, str(tmp_path / "docker.tar")) == [docker_img.config_digest]

    # The running daemon sees both at once: it keeps no stale in-memory copy.
    by_id = {i.id: i for i in d.image.ListImages(api.ListImagesRequest()).images}
    assert list(by_id[oci_img.config_digest].repo_tags) == ["example.com/airgap/oci:1"]
    assert list(by_id[oci_img.config_digest].repo_digests) == [
        f"example.com/airgap/oci@{oci_img.digest}"
    ]
    assert sorted(by_id[docker_img.config_digest].repo_tags) == [
        "docker.io/airgap/docker:latest",
        "docker.io/airgap/docker:v2",
    ]
    assert by_id[docker_img.config_digest].username == "www-data"
    st = d.image.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image="airgap/docker:v2")))
    assert st.image.id == docker_img.config_digest

    records = list_images(cfg)
    assert {r.id for r in records} == set(by_id)
    table = format_images(records)
    assert "docker.io/airgap/docker" in table and "v2" in table

    d.image.RemoveImage(
        api.RemoveImageRequest(image=api.ImageSpec(image="example.com/airgap/oci:1"))
    )
    assert {r.id for r in list_images(cfg)} == {docker_img.config_digest}

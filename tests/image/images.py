"""Test images built from generated tars and Debian's busybox-static, and a tiny pusher."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from tests.image.layers import Entry, compress, directory, file, sha256, symlink, tar_bytes

BUSYBOX = "/bin/busybox"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


@dataclass
class Image:
    """One image: blobs by digest, its manifest, and the tags to push it under."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifest: bytes = b""
    media_type: str = OCI_MANIFEST
    config_digest: str = ""
    layer_digests: list[str] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def build(
    layers: list[tuple[list[Entry], str]],
    user: str = "",
    arch: str = "amd64",
    docker: bool = False,
    extra_config: dict[str, Any] | None = None,
) -> Image:
    img = Image()
    descs = []
    for entries, kind in layers:
        raw = tar_bytes(entries)
        blob = compress(raw, kind)
        digest = sha256(blob)
        img.blobs[digest] = blob
        img.layer_digests.append(digest)
        img.diff_ids.append(sha256(raw))
        media = LAYER_TYPES[kind]
        if docker:
            media = "application/vnd.docker.image.rootfs.diff.tar.gzip"
        descs.append({"mediaType": media, "digest": digest, "size": len(blob)})
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": user,
            "Cmd": ["/bin/sh"],
            "Volumes": {"/data": {}},
            **(extra_config or {}),
        },
        "rootfs": {"type": "layers", "diff_ids": img.diff_ids},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    img.config_digest = sha256(config_bytes)
    img.blobs[img.config_digest] = config_bytes
    img.media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": img.media_type,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json"
            if docker
            else "application/vnd.oci.image.config.v1+json",
            "digest": img.config_digest,
            "size": len(config_bytes),
        },
        "layers": descs,
    }
    img.manifest = json.dumps(manifest).encode()
    return img


def index(images: dict[str, Image]) -> tuple[bytes, str]:
    """An OCI index over `images` keyed by "os/arch[/variant]"; returns (bytes, digest)."""
    manifests = []
    for plat, img in images.items():
        os_, arch, *variant = plat.split("/")
        p: dict[str, str] = {"os": os_, "architecture": arch}
        if variant:
            p["variant"] = variant[0]
        manifests.append(
            {
                "mediaType": img.media_type,
                "digest": img.digest,
                "size": len(img.manifest),
                "platform": p,
            }
        )
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    return body, sha256(body)


def base_layer() -> list[Entry]:
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    return [
        directory("bin"),
        file("bin/busybox", busybox, mode=0o755),
        symlink("bin/sh", "busybox"),
        directory("etc"),
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\n"),
        file("etc/group", b"root:x:0:\n"),
        file("etc/motd", b"base\n"),
        directory("var/cache", mode=0o755),
        file("var/cache/old1", b"o1"),
        file("var/cache/old2", b"o2"),
        directory("tmp", mode=0o1777),
    ]


def multilayer_image() -> Image:
    """Three layers: gzip base, a gzip layer with a whiteout and an opaque dir, a zstd layer."""
    return build(
        [
            (base_layer(), "gzip"),
            (
                [
                    directory("etc"),
                    file("etc/.wh.motd"),
                    directory("var/cache"),
                    file("var/cache/.wh..wh..opq"),
                    file("var/cache/new", b"n"),
                ],
                "gzip",
            ),
            ([directory("srv"), file("srv/data.txt", b"zstd layer\n", uid=1002, gid=1002)], "zstd"),
        ],
        user="1002",
    )


# ---- pushing to a plain (unauthenticated) registry -----------------------------------------


def _request(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Any:
    req = urllib.request.Request(
        url, data=body if method in ("POST", "PUT") else None, method=method
    )
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    return urllib.request.urlopen(req, timeout=30)


def push_blob(base: str, repo: str, digest: str, data: bytes) -> None:
    with _request("POST", f"{base}/v2/{repo}/blobs/uploads/", b"") as resp:
        location = resp.headers["Location"]
    sep = "&" if "?" in location else "?"
    if location.startswith("/"):
        location = base + location
    with _request(
        "PUT",
        f"{location}{sep}digest={digest}",
        data,
        {"Content-Type": "application/octet-stream"},
    ):
        pass


def push_manifest(base: str, repo: str, ref: str, body: bytes, media_type: str) -> None:
    with _request("PUT", f"{base}/v2/{repo}/manifests/{ref}", body, {"Content-Type": media_type}):
        pass


def push(base: str, repo: str, img: Image, tags: list[str]) -> None:
    for digest, data in img.blobs.items():
        push_blob(base, repo, digest, data)
    push_manifest(base, repo, img.digest, img.manifest, img.media_type)
    for tag in tags:
        push_manifest(base, repo, tag, img.manifest, img.media_type)

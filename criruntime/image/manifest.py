"""Manifests and indexes: Docker schema 2 and OCI; platform choice; schema 1 refused."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from criruntime.errors import FailedPrecondition, InvalidArgument, NotFound
from criruntime.image.reference import validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# Schema 1 is asked for too, only so its refusal can say what it is instead of "not found".
ACCEPT = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST, *DOCKER_SCHEMA1]
MAX_MANIFEST_BYTES = 4 << 20  # containerd's limit too
# Image configs are parsed in memory; real ones are KBs (history included), so this only stops a
# registry that would make the daemon load a huge document.
MAX_CONFIG_BYTES = 8 << 20

LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)

_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", ""),
    "i386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None

    @classmethod
    def parse(cls, raw: Any, what: str) -> Descriptor:
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{what}: descriptor is not an object")
        digest = raw.get("digest")
        size = raw.get("size")
        if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
            raise InvalidArgument(f"{what}: descriptor needs a digest and a size")
        validate_digest(digest)
        plat = raw.get("platform")
        return cls(
            str(raw.get("mediaType", "")), digest, size, plat if isinstance(plat, dict) else None
        )


@dataclass(frozen=True)
class ImageManifest:
    config: Descriptor
    layers: list[Descriptor]
    doc: dict[str, Any]


def host_platform() -> tuple[str, str]:
    machine = platform.machine()
    return _ARCH.get(machine, (machine, ""))


def load(body: bytes, media_type: str, what: str) -> tuple[str, dict[str, Any]]:
    """Parses a manifest or index; returns (media type, document). Schema 1 is refused."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise InvalidArgument(f"{what}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
    doc = _json_object(body, f"{what}: manifest")
    kind = str(doc.get("mediaType") or media_type or "")
    if kind in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise FailedPrecondition(
            f"{what}: Docker image manifest schema 1 is not supported (deprecated and removed "
            "from containerd and docker); push the image again with a current client"
        )
    if kind not in INDEX_TYPES and kind not in MANIFEST_TYPES:
        # Untyped OCI documents: tell index from manifest by shape.
        kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "config" in doc else kind
    if kind not in INDEX_TYPES and kind not in MANIFEST_TYPES:
        raise InvalidArgument(f"{what}: unsupported manifest media type {kind!r}")
    return kind, doc


def choose_platform(index: dict[str, Any], what: str) -> Descriptor:
    """The linux/<host arch>[/variant] entry of a manifest list or OCI index."""
    arch, variant = host_platform()
    candidates: list[tuple[int, int, Descriptor]] = []
    seen = []
    for raw in index.get("manifests") or []:
        desc = Descriptor.parse(raw, what)
        plat = desc.platform or {}
        seen.append(
            "/".join(
                p for p in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if p
            )
        )
        if plat.get("os") != "linux" or plat.get("architecture") != arch:
            continue
        got = str(plat.get("variant") or "")
        # Exact variant first, then none given (arm64 means v8), then any other variant.
        rank = 0 if got == variant else 1 if not got else 2
        candidates.append((rank, len(candidates), desc))
    if not candidates:
        raise NotFound(
            f"{what}: no image for linux/{arch}{'/' + variant if variant else ''} "
            f"(available: {', '.join(seen) or 'none'})"
        )
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


def parse_image_manifest(doc: dict[str, Any], what: str) -> ImageManifest:
    config = Descriptor.parse(doc.get("config"), f"{what} config")
    if config.size > MAX_CONFIG_BYTES:
        raise InvalidArgument(
            f"{what}: image config of {config.size} bytes is over the {MAX_CONFIG_BYTES} limit"
        )
    layers = [Descriptor.parse(raw, f"{what} layer") for raw in doc.get("layers") or []]
    for layer in layers:
        if layer.media_type and layer.media_type not in LAYER_TYPES:
            raise FailedPrecondition(
                f"{what}: layer {layer.digest} has unsupported media type {layer.media_type!r}"
            )
    return ImageManifest(config, layers, doc)


def load_config(body: bytes, what: str) -> dict[str, Any]:
    return _json_object(body, f"{what}: image config")


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise InvalidArgument(f"{what} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return doc


def diff_ids(config: dict[str, Any], layers: int, what: str) -> list[str]:
    rootfs = config.get("rootfs") or {}
    ids = rootfs.get("diff_ids")
    if not isinstance(ids, list) or len(ids) != layers:
        raise InvalidArgument(
            f"{what}: image config lists {len(ids) if isinstance(ids, list) else 0} diff IDs "
            f"for {layers} layers"
        )
    return [validate_digest(str(i)) for i in ids]

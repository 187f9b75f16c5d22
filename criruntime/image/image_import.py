"""Image import for air-gapped nodes: an OCI image layout or a docker-archive tarball.

Blobs go through the content store (so they are verified like pulled ones), layers through the
layer store, and the image row is written last, exactly as a pull does it; the shared store
lock keeps the daemon's GC off the blobs until then.
"""

from __future__ import annotations

import json
import tarfile
import time
from typing import TYPE_CHECKING, Any

from criruntime.errors import InvalidArgument
from criruntime.image import manifest, reference
from criruntime.image.content_store import sha256_digest
from criruntime.image.image_pull import ensure_layers
from criruntime.image.image_store import ImageRecord
from criruntime.image.layer_store import chain_ids

if TYPE_CHECKING:
    from criruntime.image.service import ImageService

OCI_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    for candidate in (name, "./" + name):
        try:
            return tar.getmember(candidate)
        except KeyError:
            continue
    return None


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = _member(tar, name)
    f = tar.extractfile(member) if member is not None else None
    if f is None:
        raise InvalidArgument(f"archive has no file {name!r}")
    return f.read()


def _blob_name(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


async def import_archive(svc: ImageService, path: str) -> list[str]:
    """Imports every image in the tarball at `path`; returns their image IDs."""
    try:
        tar = _open(path)
    except (OSError, tarfile.TarError) as e:
        raise InvalidArgument(f"{path}: not a readable tar archive: {e}") from None
    with tar:
        async with svc.lock.shared():
            if _member(tar, "index.json") is not None:
                return await _import_oci(svc, tar)
            if _member(tar, "manifest.json") is not None:
                return await _import_docker(svc, tar)
    raise InvalidArgument(f"{path}: neither an OCI image layout nor a docker archive")


def _open(path: str) -> tarfile.TarFile:
    return tarfile.open(path, "r:*")


def _store_docker_layer(svc: ImageService, tar: tarfile.TarFile, layer_path: str) -> dict[str, Any]:
    member = _member(tar, layer_path)
    src = tar.extractfile(member) if member is not None else None
    if src is None:
        raise InvalidArgument(f"archive lacks layer {layer_path!r}")
    digest, size = svc.content.put_stream(src)
    with open(svc.content.path(digest), "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    media = "application/vnd.docker.image.rootfs.diff.tar" + (".gzip" if gz else "")
    return {"mediaType": media, "digest": digest, "size": size}


def _store_blob(svc: ImageService, tar: tarfile.TarFile, digest: str) -> None:
    if svc.content.exists(digest):
        return
    member = _member(tar, _blob_name(digest))
    src = tar.extractfile(member) if member is not None else None
    if src is None:
        raise InvalidArgument(f"archive lacks blob {digest}")
    ingest = svc.content.ingest(digest, member.size if member else None)
    try:
        while chunk := src.read(1 << 20):
            ingest.write(chunk)
    except BaseException:
        ingest.abort()
        raise
    ingest.commit()


async def _import_oci(svc: ImageService, tar: tarfile.TarFile) -> list[str]:
    index = json.loads(_read(tar, "index.json"))
    ids = []
    for raw in index.get("manifests") or []:
        desc = manifest.Descriptor.parse(raw, "index.json")
        annotations = raw.get("annotations") or {}
        # containerd's annotation holds the full name; the OCI one is often a bare tag ("1"),
        # which names nothing on its own, so it counts only if it looks like a repository.
        name = str(annotations.get(OCI_NAME_ANNOTATIONS[0]) or "")
        oci_name = str(annotations.get(OCI_NAME_ANNOTATIONS[1]) or "")
        if not name and "/" in oci_name:
            name = oci_name
        refs = [reference.parse(name)] if name else []
        _store_blob(svc, tar, desc.digest)
        kind, doc = manifest.load(svc.content.read(desc.digest), desc.media_type, desc.digest)
        top_digest = manifest_digest = desc.digest
        blobs = [desc.digest]
        if kind in manifest.INDEX_TYPES:
            chosen = manifest.choose_platform(doc, desc.digest)
            _store_blob(svc, tar, chosen.digest)
            manifest_digest = chosen.digest
            blobs.append(chosen.digest)
            kind, doc = manifest.load(
                svc.content.read(chosen.digest), chosen.media_type, desc.digest
            )
        image = manifest.parse_image_manifest(doc, manifest_digest)
        for blob in (image.config, *image.layers):
            _store_blob(svc, tar, blob.digest)
        names_out = []
        for ref in refs:
            names_out.append(f"{ref.repository}@{top_digest}")
            if ref.tag:
                names_out.append(f"{ref.repository}:{ref.tag}")
        ids.append(await _commit(svc, image, manifest_digest, blobs, names_out))
    return ids


async def _import_docker(svc: ImageService, tar: tarfile.TarFile) -> list[str]:
    entries = json.loads(_read(tar, "manifest.json"))
    ids = []
    for entry in entries:
        config_bytes = _read(tar, entry["Config"])
        config_digest = svc.content.put(config_bytes)
        layers = [_store_docker_layer(svc, tar, p) for p in entry.get("Layers") or []]
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": manifest.DOCKER_MANIFEST,
            "config": {
                "mediaType": manifest.DOCKER_CONFIG,
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": layers,
        }
        body = json.dumps(doc, indent=3).encode()
        manifest_digest = svc.content.put(body, sha256_digest(body))
        names = []
        for tag in entry.get("RepoTags") or []:
            ref = reference.parse(tag)
            names += [str(ref), f"{ref.repository}@{manifest_digest}"]
        image = manifest.parse_image_manifest(doc, manifest_digest)
        ids.append(await _commit(svc, image, manifest_digest, [manifest_digest], names))
    return ids


async def _commit(
    svc: ImageService,
    image: manifest.ImageManifest,
    manifest_digest: str,
    blobs: list[str],
    names: list[str],
) -> str:
    config = manifest.load_config(svc.content.read(image.config.digest), manifest_digest)
    diff_ids = manifest.diff_ids(config, len(image.layers), manifest_digest)
    chains = chain_ids(diff_ids)
    await ensure_layers(svc, None, image.layers, diff_ids, chains)
    record = ImageRecord(
        id=image.config.digest,
        manifest_digest=manifest_digest,
        size=svc.content.size(manifest_digest)
        + image.config.size
        + sum(d.size for d in image.layers),
        created_at=time.time_ns(),
        config=config,
        manifest=image.doc,
        chain_ids=chains,
        blobs=[*blobs, image.config.digest, *(d.digest for d in image.layers)],
    )
    svc.images.add(record, names)
    return record.id

"""PullImage: resolve → manifest (platform from an index) → config → layers → one DB commit.

Layers are independent here (each unpacks into its own dir, keyed by chain ID), so each layer
is its own pipeline: download (at most N at once) then unpack in a thread. Layer 1 unpacks
while layers 2..N download. An image row is written only after every layer is in place, in
one transaction, so a crash at any point leaves no half image listed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import CriError, FailedPrecondition, InvalidArgument
from criruntime.image import manifest, reference
from criruntime.image.content_store import DigestMismatch, sha256_digest
from criruntime.image.image_store import ImageRecord
from criruntime.image.layer_store import chain_ids
from criruntime.image.manifest import Descriptor
from criruntime.image.reference import Reference
from criruntime.image.registry import Credentials, Manifest, Repository
from criruntime.observability import metrics

if TYPE_CHECKING:
    from criruntime.image.service import ImageService

log = logging.getLogger("criruntime.image.pull")


def credentials(auth: api.AuthConfig) -> Credentials:
    return Credentials.from_auth(
        username=auth.username,
        password=auth.password,
        auth=auth.auth,
        identity_token=auth.identity_token,
        registry_token=auth.registry_token,
    )


@metrics.timed("image_pull")
async def pull_image(svc: ImageService, request: api.PullImageRequest) -> api.PullImageResponse:
    ref = reference.parse(request.image.image)
    creds = credentials(request.auth)
    image_id = await pull(svc, ref, creds)
    return api.PullImageResponse(image_ref=image_id)


async def pull(svc: ImageService, ref: Reference, creds: Credentials) -> str:
    """Pulls `ref`; returns the image ID. Identical concurrent pulls share one download."""
    return await svc.pulls.do((str(ref), creds), lambda: _pull(svc, ref, creds))


def _verify(ref: Reference, fetched: Manifest, expected: str | None) -> str:
    digest = sha256_digest(fetched.body)
    if expected is not None and expected != digest:
        raise DigestMismatch(f"{ref}: manifest content has digest {digest}, expected {expected}")
    header = fetched.digest
    if expected is None and header.startswith("sha256:") and header != digest:
        raise DigestMismatch(f"{ref}: manifest content has digest {digest}, registry says {header}")
    return expected or digest


async def _pull(svc: ImageService, ref: Reference, creds: Credentials) -> str:
    started = time.monotonic()
    repo = svc.registry.repository(ref, creds)
    what = str(ref)
    async with svc.lock.shared():
        top = await repo.fetch_manifest(ref.object, manifest.ACCEPT)
        top_digest = _verify(ref, top, ref.digest)
        kind, doc = manifest.load(top.body, top.media_type, what)
        svc.content.put(top.body, top_digest)
        blobs = [top_digest]
        manifest_digest = top_digest
        if kind in manifest.INDEX_TYPES:
            chosen = manifest.choose_platform(doc, what)
            fetched = await repo.fetch_manifest(chosen.digest, manifest.ACCEPT)
            manifest_digest = _verify(ref, fetched, chosen.digest)
            kind, doc = manifest.load(fetched.body, fetched.media_type, what)
            if kind in manifest.INDEX_TYPES:
                raise InvalidArgument(f"{what}: an index inside an index is not supported")
            svc.content.put(fetched.body, manifest_digest)
            blobs.append(manifest_digest)
        image = manifest.parse_image_manifest(doc, what)
        await fetch_blob(svc, repo, image.config)
        config = manifest.load_config(svc.content.read(image.config.digest), what)
        diff_ids = manifest.diff_ids(config, len(image.layers), what)
        chains = chain_ids(diff_ids)
        await ensure_layers(svc, repo, image.layers, diff_ids, chains)
        manifest_size = svc.content.size(manifest_digest)
        record = ImageRecord(
            id=image.config.digest,
            manifest_digest=manifest_digest,
            size=manifest_size + image.config.size + sum(d.size for d in image.layers),
            created_at=time.time_ns(),
            config=config,
            manifest=doc,
            chain_ids=chains,
            blobs=[*blobs, image.config.digest, *(d.digest for d in image.layers)],
        )
        names = [f"{ref.repository}@{top_digest}"]
        if ref.tag:
            names.append(f"{ref.repository}:{ref.tag}")
        svc.images.add(record, names)
    log.info(
        "pulled %s as %s (%d layers) in %.2fs",
        ref,
        record.id,
        len(image.layers),
        time.monotonic() - started,
    )
    return record.id


async def fetch_blob(svc: ImageService, repo: Repository, desc: Descriptor) -> str:
    """The blob's path in the content store, downloading it (once) if it is not there yet."""
    if svc.content.exists(desc.digest):
        return svc.content.path(desc.digest)

    async def download() -> str:
        async with svc.download_slots:
            if svc.content.exists(desc.digest):  # another process got it meanwhile
                return svc.content.path(desc.digest)
            ingest = svc.content.ingest(desc.digest, desc.size)
            try:
                await repo.fetch_blob(desc.digest, ingest)
            except BaseException:
                ingest.abort()
                raise
            # commit fsyncs, which can block for a while on a big layer.
            path = await asyncio.get_running_loop().run_in_executor(None, ingest.commit)
            metrics.IMAGE_PULL_BYTES.inc(desc.size)
            return path

    return await svc.blobs.do(desc.digest, download)


async def ensure_layers(
    svc: ImageService,
    repo: Repository | None,
    layers: list[Descriptor],
    diff_ids: list[str],
    chains: list[str],
) -> None:
    """All layers at once. The first failure is raised as itself, the other downloads
    cancelled: an ExceptionGroup would reach the caller as INTERNAL whatever it held."""
    try:
        async with asyncio.TaskGroup() as group:
            for desc, diff_id, chain_id in zip(layers, diff_ids, chains, strict=True):
                group.create_task(ensure_layer(svc, repo, desc, diff_id, chain_id))
    except ExceptionGroup as failed:
        leaves = _leaves(failed)
        raise next((e for e in leaves if isinstance(e, CriError)), leaves[0]) from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for e in group.exceptions:
        found += _leaves(e) if isinstance(e, BaseExceptionGroup) else [e]
    return found


async def ensure_layer(
    svc: ImageService, repo: Repository | None, desc: Descriptor, diff_id: str, chain_id: str
) -> None:
    """Unpacks the layer unless its chain ID is already in the layer store; then its blob is
    not even downloaded. `repo` None means the blob must already be local (image import)."""
    if svc.layers.exists(chain_id):
        return

    async def unpack() -> None:
        if repo is not None:
            path = await fetch_blob(svc, repo, desc)
        elif svc.content.exists(desc.digest):
            path = svc.content.path(desc.digest)
        else:
            raise FailedPrecondition(f"layer blob {desc.digest} is missing")
        async with svc.unpack_slots:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, svc.layers.unpack, chain_id, path, diff_id)

    await svc.unpacks.do(chain_id, unpack)

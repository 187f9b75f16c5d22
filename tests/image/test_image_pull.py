"""The CRI image verbs against a real docker-registry on 127.0.0.1 (in-process ImageService)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument, NotFound, Unavailable
from criruntime.image.layer_store import chain_ids
from criruntime.image.manifest import OCI_CONFIG, OCI_MANIFEST
from criruntime.image.registry import Repository, Unauthorized
from criruntime.image.unpack import OPAQUE_XATTR
from tests.image import images
from tests.image.conftest import MANY_LAYERS, Catalog, Harness
from tests.image.layers import file
from tests.image.registry_env import (
    IDENTITY_TOKEN,
    PASSWORD,
    USER,
    HostileRegistry,
    Registry,
    TokenServer,
)


def pull(h: Harness, image: str, auth: api.AuthConfig | None = None) -> str:
    req = api.PullImageRequest(image=api.ImageSpec(image=image), auth=auth)
    return h.run(h.svc.pull_image(req)).image_ref


def status(h: Harness, image: str, verbose: bool = False) -> api.ImageStatusResponse:
    req = api.ImageStatusRequest(image=api.ImageSpec(image=image), verbose=verbose)
    return h.run(h.svc.image_status(req))


def listed(h: Harness) -> list[api.Image]:
    return list(h.run(h.svc.list_images(api.ListImagesRequest())).images)


def remove(h: Harness, image: str) -> None:
    h.run(h.svc.remove_image(api.RemoveImageRequest(image=api.ImageSpec(image=image))))


def test_pull_by_tag_names_and_status(harness: Harness, catalog: Catalog) -> None:
    h, host = harness, catalog.plain.host
    repo = f"{host}/testimg/multi"
    image_id = pull(h, f"{repo}:1")
    assert image_id == catalog.multi.config_digest
    st = status(h, f"{repo}:1").image
    assert list(st.repo_tags) == [f"{repo}:1"]
    assert list(st.repo_digests) == [f"{repo}@{catalog.multi.digest}"]
    assert st.uid.value == 1002 and st.username == ""
    expected_size = len(catalog.multi.manifest) + sum(len(b) for b in catalog.multi.blobs.values())
    assert st.size == expected_size
    # By ID, by ID prefix, by digest: the same object.
    assert status(h, image_id).image == st
    assert status(h, image_id.removeprefix("sha256:")[:12]).image == st
    assert status(h, f"{repo}@{catalog.multi.digest}").image == st
    assert [i.id for i in listed(h)] == [image_id]
    verbose = status(h, image_id, verbose=True)
    assert '"imageSpec"' in verbose.info["info"] and '"manifest"' in verbose.info["info"]


def test_layers_unpacked_with_whiteouts(harness: Harness, catalog: Catalog) -> None:
    h = harness
    pull(h, f"{catalog.plain.host}/testimg/multi:1")
    chains = chain_ids(catalog.multi.diff_ids)
    base, mid, top = (h.svc.layers.diff_dir(c) for c in chains)
    assert os.access(os.path.join(base, "bin/busybox"), os.X_OK)
    assert os.readlink(os.path.join(base, "bin/sh")) == "busybox"
    wh = os.stat(os.path.join(mid, "etc/motd"), follow_symlinks=False)
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(os.path.join(mid, "var/cache"), OPAQUE_XATTR) == b"y"
    data = os.stat(os.path.join(top, "srv/data.txt"))
    assert (data.st_uid, data.st_gid) == (1002, 1002)


def test_overlay_mount_of_pulled_image(
    harness: Harness, catalog: Catalog, tmp_path: object
) -> None:
    h = harness
    pull(h, f"{catalog.plain.host}/testimg/multi:1")
    _check_mount(h, chain_ids(catalog.multi.diff_ids), lambda merged: _multi_rootfs_ok(merged))


def _multi_rootfs_ok(merged: str) -> None:
    assert not os.path.exists(os.path.join(merged, "etc/motd"))  # whited out
    assert sorted(os.listdir(os.path.join(merged, "var/cache"))) == ["new"]  # opaque
    with open(os.path.join(merged, "srv/data.txt")) as f:
        assert f.read() == "zstd layer\n"
    out = subprocess.run(
        [
            "chroot",
            merged,
            "/bin/sh",
            "-c",
            "echo hi from $(cat /etc/marker 2>/dev/null || echo busybox)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "hi from busybox"


def _check_mount(h: Harness, chains: list[str], check: Callable[[str], None]) -> None:
    work = tempfile.mkdtemp(prefix="crir-mnt-")
    upper, wdir, merged = (os.path.join(work, d) for d in ("upper", "work", "merged"))
    for d in (upper, wdir, merged):
        os.mkdir(d)
    option = f"{h.svc.layers.lowerdir_option(chains)},upperdir={upper},workdir={wdir}"
    # Relative lower dirs: the mount runs with its cwd at the image store root.
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", option, merged], check=True, cwd=h.svc.root
    )
    try:
        check(merged)
    finally:
        subprocess.run(["umount", merged], check=True)
        subprocess.run(["rm", "-rf", work], check=True)


def test_128_layers_mount(harness: Harness, catalog: Catalog) -> None:
    h = harness
    pull(h, f"{catalog.plain.host}/testimg/many:latest")
    chains = chain_ids(catalog.many.diff_ids)
    assert len(h.svc.layers.lowerdir_option(chains)) > 1000

    def check(merged: str) -> None:
        assert len([n for n in os.listdir(merged) if n.startswith("f")]) == MANY_LAYERS

    _check_mount(h, chains, check)


def test_three_tags_one_image_removed_together(harness: Harness, catalog: Catalog) -> None:
    h = harness
    repo = f"{catalog.plain.host}/testimg/multi"
    ids = {pull(h, f"{repo}:{t}") for t in ("1", "2", "3")}
    assert ids == {catalog.multi.config_digest}
    (img,) = listed(h)
    assert sorted(img.repo_tags) == [f"{repo}:1", f"{repo}:2", f"{repo}:3"]
    assert len(img.repo_digests) == 1
    remove(h, f"{repo}:2")
    assert listed(h) == []
    for ref in (f"{repo}:1", f"{repo}:3", img.id):
        assert not status(h, ref).HasField("image")
    # GC gave the disk back.
    assert list(h.svc.content.digests()) == [] and list(h.svc.layers.chain_ids()) == []
    remove(h, f"{repo}:2")  # absent: still success


def test_concurrent_removes_all_succeed(harness: Harness, catalog: Catalog) -> None:
    h = harness
    image = f"{catalog.plain.host}/testimg/multi:1"
    pull(h, image)

    async def many() -> None:
        reqs = [api.RemoveImageRequest(image=api.ImageSpec(image=image)) for _ in range(5)]
        await asyncio.gather(*(h.svc.remove_image(r) for r in reqs))

    h.run(many())
    assert listed(h) == []


def test_pull_by_digest_and_tag_plus_digest(harness: Harness, catalog: Catalog) -> None:
    h = harness
    repo = f"{catalog.plain.host}/testimg/multi"
    by_digest = f"{repo}@{catalog.multi.digest}"
    assert pull(h, by_digest) == catalog.multi.config_digest
    st = status(h, by_digest).image
    assert list(st.repo_tags) == [] and list(st.repo_digests) == [by_digest]
    assert pull(h, f"{repo}:1@{catalog.multi.digest}") == catalog.multi.config_digest
    assert list(status(h, by_digest).image.repo_tags) == []


def test_multiarch_index_picks_host_platform(harness: Harness, catalog: Catalog) -> None:
    h = harness
    repo = f"{catalog.plain.host}/testimg/multiarch"
    image_id = pull(h, f"{repo}:latest")
    assert image_id == catalog.multiarch_amd64.config_digest
    st = status(h, image_id).image
    # The repo digest is what the tag points at: the index, as on containerd.
    assert list(st.repo_digests) == [f"{repo}@{catalog.multiarch_index_digest}"]


@pytest.mark.parametrize(
    ("tag", "uid", "username"),
    [
        ("uid", 1002, ""),
        ("name", None, "www-data"),
        ("uidgid", 1003, ""),
        ("namegid", None, "www-data"),
    ],
)
def test_user_variants(
    harness: Harness, catalog: Catalog, tag: str, uid: int | None, username: str
) -> None:
    h = harness
    st = status(h, pull(h, f"{catalog.plain.host}/testimg/user:{tag}")).image
    assert st.HasField("uid") == (uid is not None)
    if uid is not None:
        assert st.uid.value == uid
    assert st.username == username


def test_docker_schema2_media_types(harness: Harness, catalog: Catalog) -> None:
    h = harness
    assert pull(h, f"{catalog.plain.host}/testimg/docker:latest") == catalog.docker.config_digest


def test_missing_image(harness: Harness, catalog: Catalog) -> None:
    h = harness
    with pytest.raises(NotFound):
        pull(h, f"{catalog.plain.host}/testimg/nope:latest")
    with pytest.raises(NotFound):
        pull(h, f"{catalog.plain.host}/testimg/multi:nope")
    assert not status(h, "busybox").HasField("image")
    assert listed(h) == []


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    registry = HostileRegistry()
    yield registry
    registry.stop()


def _oci_manifest(config: str, config_size: int) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_size},
    }).encode()  # fmt: skip


def test_hostile_registry_documents_are_refused_without_buffering_them(
    harness: Harness, hostile: HostileRegistry
) -> None:
    h = harness
    not_json = hostile.blob(b"{not json")
    hostile.manifests["badconfig"] = (OCI_MANIFEST, _oci_manifest(not_json, 9))
    with pytest.raises(InvalidArgument, match="image config is not JSON"):
        pull(h, f"{hostile.host}/evil/x:badconfig")
    # A config declared far too big is refused from the manifest, never downloaded.
    hostile.manifests["bigconfig"] = (OCI_MANIFEST, _oci_manifest("sha256:" + "a" * 64, 1 << 30))
    with pytest.raises(InvalidArgument, match="image config of 1073741824 bytes is over"):
        pull(h, f"{hostile.host}/evil/x:bigconfig")
    assert hostile.blob_requests == [not_json]
    # An endless manifest is cut off past 4 MiB, not read to the end into memory (it was: a
    # 300 MB one took the daemon to 360 MB RSS).
    hostile.manifests["endless"] = (OCI_MANIFEST, None)
    with pytest.raises(InvalidArgument, match="manifest larger than 4194304 bytes"):
        pull(h, f"{hostile.host}/evil/x:endless")
    assert hostile.streamed < 64 << 20
    assert listed(h) == []


def _serve(hostile: HostileRegistry, img: images.Image, tag: str, skip: str = "") -> str:
    hostile.blobs.update({d: b for d, b in img.blobs.items() if d != skip})
    hostile.manifests[tag] = (img.media_type, img.manifest)
    return f"{hostile.host}/evil/x:{tag}"


def test_a_failing_layer_is_reported_as_itself(harness: Harness, hostile: HostileRegistry) -> None:
    # Layers download in a TaskGroup; its ExceptionGroup reached the caller as INTERNAL
    # ("unhandled errors in a TaskGroup") whatever one layer's error was.
    img = images.multilayer_image()
    missing = img.layer_digests[1]
    with pytest.raises(NotFound, match=f"blob {missing} not found"):
        pull(harness, _serve(hostile, img, "gap", skip=missing))
    assert listed(harness) == []


def test_a_full_disk_fails_the_pull_and_leaves_nothing(
    make_harness: Callable[..., Harness], hostile: HostileRegistry
) -> None:
    root = tempfile.mkdtemp(prefix="crir-full-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root], check=True)
    try:
        h = make_harness(root=root)
        noise = os.urandom(3 << 20)  # incompressible: the blob alone is over the 1 MiB disk
        img = images.build([([file("big", noise)], "gzip")])
        with pytest.raises(OSError) as raised:  # the RPC layer maps it to RESOURCE_EXHAUSTED
            pull(h, _serve(hostile, img, "big"))
        assert raised.value.errno == errno.ENOSPC
        assert listed(h) == []
        assert os.listdir(h.svc.content.ingest_dir) == []  # the partial download is gone
    finally:
        subprocess.run(["umount", "-l", root], check=True)
        os.rmdir(root)


def test_malformed_reference(harness: Harness) -> None:
    with pytest.raises(InvalidArgument, match="lowercase"):
        pull(harness, "Busybox")


def test_concurrent_identical_pulls_share_one_download(
    harness: Harness, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    calls: list[str] = []
    original = Repository.fetch_blob

    async def counting(self: Repository, digest: str, ingest: object) -> None:
        calls.append(digest)
        await original(self, digest, ingest)  # type: ignore[arg-type]

    monkeypatch.setattr(Repository, "fetch_blob", counting)
    image = f"{catalog.plain.host}/testimg/multi:1"

    async def many() -> list[str]:
        reqs = [api.PullImageRequest(image=api.ImageSpec(image=image)) for _ in range(4)]
        return [r.image_ref for r in await asyncio.gather(*(h.svc.pull_image(r) for r in reqs))]

    assert set(h.run(many())) == {catalog.multi.config_digest}
    assert sorted(calls) == sorted(catalog.multi.blobs)  # each blob once
    calls.clear()
    pull(h, image)  # present: nothing fetched again
    assert calls == []


def test_basic_auth(
    make_harness: Callable[..., Harness], catalog: Catalog, basic_registry: Registry
) -> None:
    h = make_harness()
    image = f"{basic_registry.host}/testimg/multi:1"
    with pytest.raises(Unauthorized):
        pull(h, image)
    with pytest.raises(Unauthorized):
        pull(h, image, api.AuthConfig(username=USER, password="wrong"))
    assert (
        pull(h, image, api.AuthConfig(username=USER, password=PASSWORD))
        == catalog.multi.config_digest
    )
    import base64

    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    h2 = make_harness()
    assert pull(h2, image, api.AuthConfig(auth=encoded)) == catalog.multi.config_digest


def test_bearer_token_auth(
    make_harness: Callable[..., Harness],
    catalog: Catalog,
    token_registry: tuple[Registry, TokenServer],
) -> None:
    reg, server = token_registry
    image = f"{reg.host}/testimg/user:uid"
    h = make_harness()
    with pytest.raises(Unauthorized):
        pull(h, image)
    before = server.issued
    assert (
        pull(h, image, api.AuthConfig(username=USER, password=PASSWORD))
        == catalog.users["uid"].config_digest
    )
    assert server.issued > before
    h2 = make_harness()
    assert (
        pull(h2, image, api.AuthConfig(identity_token=IDENTITY_TOKEN))
        == catalog.users["uid"].config_digest
    )


def test_mirror_serves_other_registry(
    make_harness: Callable[..., Harness], catalog: Catalog
) -> None:
    mirrors = {"registry.k8s.io": {"endpoints": ["http://127.0.0.1:1", catalog.plain.url]}}
    h = make_harness({"registry": {"mirrors": mirrors}}, retries=0)
    image_id = pull(h, "registry.k8s.io/testimg/multi:1")
    assert image_id == catalog.multi.config_digest
    st = status(h, "registry.k8s.io/testimg/multi:1").image
    assert list(st.repo_tags) == ["registry.k8s.io/testimg/multi:1"]
    assert list(st.repo_digests) == [f"registry.k8s.io/testimg/multi@{catalog.multi.digest}"]


def test_dead_mirror_falls_back_to_upstream(
    make_harness: Callable[..., Harness], catalog: Catalog
) -> None:
    mirrors = {catalog.plain.host: {"endpoints": ["http://127.0.0.1:1"]}}
    h = make_harness({"registry": {"mirrors": mirrors}}, retries=0)
    assert pull(h, f"{catalog.plain.host}/testimg/user:uid") == catalog.users["uid"].config_digest


def test_unreachable_upstream_error_names_what_the_mirror_said(
    make_harness: Callable[..., Harness], catalog: Catalog
) -> None:
    # The mirror lacks the tag and the registry itself is down: both answers reach the user.
    mirrors = {"127.0.0.1:1": {"endpoints": [catalog.plain.url]}}
    h = make_harness({"registry": {"mirrors": mirrors}}, retries=0)
    with pytest.raises(Unavailable) as raised:
        pull(h, "127.0.0.1:1/testimg/multi:nope")
    message = str(raised.value)
    assert "cannot connect to 127.0.0.1:1: Connection refused" in message
    assert "object at 0x" not in message  # aiohttp's own text names its SSL context
    assert f"mirrors: {catalog.plain.url}: not found" in message


def test_crash_leftovers_cleaned_and_nothing_half_listed(
    make_harness: Callable[..., Harness], catalog: Catalog
) -> None:
    h = make_harness()
    pull(h, f"{catalog.plain.host}/testimg/user:uid")
    # What a kill -9 mid-pull leaves: an ingest file, a half-unpacked layer, an unlisted blob.
    open(os.path.join(h.svc.content.ingest_dir, "sha256-x.partial"), "w").close()
    os.makedirs(os.path.join(h.svc.layers.layers_dir, ".tmp-dead/diff/etc"))
    orphan = h.svc.content.put(b"orphan blob")
    h2 = make_harness(root=h.root)  # a restarted daemon on the same root
    assert os.listdir(h2.svc.content.ingest_dir) == []
    assert not any(n.startswith(".") for n in os.listdir(h2.svc.layers.layers_dir))
    assert not h2.svc.content.exists(orphan)
    assert [i.id for i in listed(h2)] == [catalog.users["uid"].config_digest]
    pull(h2, f"{catalog.plain.host}/testimg/multi:1")
    assert len(listed(h2)) == 2


def test_image_fs_info(harness: Harness, catalog: Catalog) -> None:
    h = harness
    empty = h.run(h.svc.image_fs_info(api.ImageFsInfoRequest())).image_filesystems[0]
    pull(h, f"{catalog.plain.host}/testimg/multi:1")
    full = h.run(h.svc.image_fs_info(api.ImageFsInfoRequest())).image_filesystems[0]
    assert full.fs_id.mountpoint == h.svc.root
    assert full.used_bytes.value > empty.used_bytes.value + 1_000_000  # busybox, twice
    assert full.inodes_used.value > empty.inodes_used.value + 10

"""Reference parsing and normalisation, as docker/distribution's reference package does it."""

from __future__ import annotations

import hashlib

import pytest

from criruntime.errors import InvalidArgument
from criruntime.image import manifest
from criruntime.image.reference import familiar, parse

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("user/app:v1", "docker.io/user/app:v1"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
        ("[::1]:5000/app", "[::1]:5000/app:latest"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        # tag + digest: pulled by digest, named by digest (containerd's ParseDockerRef).
        (f"busybox:1.36@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        ("ghcr.io/o/a_b.c-d__e:T_1.x-y", "ghcr.io/o/a_b.c-d__e:T_1.x-y"),
    ],
)
def test_normalise(text: str, normalised: str) -> None:
    assert str(parse(text)) == normalised


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("busybox:", "malformed tag"),
        ("busybox:-bad", "malformed tag"),
        ("busybox@sha256:abc", "malformed digest"),
        (f"busybox@md5:{'a' * 32}", "unsupported algorithm"),
        ("a" * 64, "64-byte hexadecimal"),
        ("a//b", "malformed path component"),
        ("a/b_", "malformed path component"),
        (" busybox", "whitespace"),
        ("host:5000/", "malformed path component"),
        ("x/" + "a" * 300, "longer than"),
    ],
)
def test_malformed(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        parse(text)


def test_familiar() -> None:
    assert familiar(parse("busybox")) == "busybox:latest"
    assert familiar(parse("quay.io/a/b@" + DIGEST)) == "quay.io/a/b@" + DIGEST


def test_schema1_refused_clearly() -> None:
    body = b'{"schemaVersion": 1, "name": "x", "fsLayers": []}'
    with pytest.raises(Exception, match="schema 1 is not supported"):
        manifest.load(body, "application/vnd.docker.distribution.manifest.v1+prettyjws", "x")


def test_platform_choice_prefers_exact_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "host_platform", lambda: ("arm64", "v8"))

    def desc(arch: str, variant: str = "", os: str = "linux") -> dict[str, object]:
        plat = {"os": os, "architecture": arch, **({"variant": variant} if variant else {})}
        return {
            "digest": "sha256:" + hashlib.sha256(repr(plat).encode()).hexdigest(),
            "size": 1,
            "platform": plat,
        }

    index = {
        "manifests": [
            desc("amd64"),
            desc("arm64", "v7"),
            desc("arm64"),
            desc("arm64", "v8", "windows"),
        ]
    }
    assert manifest.choose_platform(index, "x").platform == {"os": "linux", "architecture": "arm64"}
    with pytest.raises(Exception, match="no image for linux/arm64/v8"):
        manifest.choose_platform({"manifests": [desc("amd64")]}, "x")

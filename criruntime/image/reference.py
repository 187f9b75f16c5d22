"""Docker image references: parsing and normalisation, as docker/distribution's `reference`.

`busybox` → `docker.io/library/busybox:latest`; `host:5000/a/b@sha256:…` keeps its host. A name
with both a tag and a digest is pulled by digest and keeps only the digest name, as containerd's
ParseDockerRef does: the digest is what was asked for, the tag could point anywhere by now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from criruntime.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HEX_ID = re.compile(r"[a-f0-9]{64}")
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """The fully qualified name without tag or digest: `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)


def validate_digest(digest: str) -> str:
    """Returns `digest` if it is `algorithm:hex` with a known algorithm, else InvalidArgument."""
    algorithm, _, encoded = digest.partition(":")
    want = _DIGEST_HEX_LENGTH.get(algorithm)
    if want is None:
        raise InvalidArgument(f"invalid digest {digest!r}: unsupported algorithm {algorithm!r}")
    if len(encoded) != want or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise InvalidArgument(f"invalid digest {digest!r}: want {want} lowercase hex characters")
    return digest


def parse(text: str) -> Reference:
    """Parses and normalises a reference; InvalidArgument names the reason when it is malformed."""
    if not text:
        raise InvalidArgument("invalid reference format: empty image name")
    if text != text.strip():
        raise InvalidArgument(f"invalid reference format {text!r}: surrounding whitespace")
    if _HEX_ID.fullmatch(text):
        raise InvalidArgument(
            f"invalid repository name {text!r}: cannot specify 64-byte hexadecimal strings"
        )
    remainder, digest = text, None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise InvalidArgument(f"invalid reference format {text!r}: malformed digest")
        validate_digest(digest)
    name, tag = remainder, None
    # A ':' after the last '/' starts the tag; one before it belongs to a host:port.
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        name, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(f"invalid reference format {text!r}: malformed tag {tag!r}")
    if not name:
        raise InvalidArgument(f"invalid reference format {text!r}: empty repository name")
    domain, path = _split_domain(name)
    if path != path.lower():
        raise InvalidArgument(
            f"invalid reference format {text!r}: repository name must be lowercase"
        )
    if not _DOMAIN.fullmatch(domain):
        raise InvalidArgument(f"invalid reference format {text!r}: malformed registry {domain!r}")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise InvalidArgument(
                f"invalid reference format {text!r}: malformed path component {component!r}"
            )
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(
            f"invalid reference format {text!r}: repository name longer than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    if digest is not None:
        tag = None
    elif tag is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    # docker's rule: the first component is a registry host only if it looks like one.
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first == first.lower()
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def familiar(ref: Reference) -> str:
    """The short form people type: `busybox:latest` for docker.io/library/busybox:latest."""
    path = ref.path
    if ref.domain == DEFAULT_DOMAIN:
        path = path.removeprefix(OFFICIAL_PREFIX)
        text = path
    else:
        text = ref.repository
    return f"{text}@{ref.digest}" if ref.digest else f"{text}:{ref.tag or DEFAULT_TAG}"

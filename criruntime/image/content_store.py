"""Content-addressed blobs (manifests, configs, compressed layers) under <root>/images/blobs.

A blob is written to <root>/images/ingest/, its size and digest checked as the bytes stream in,
and renamed into blobs/<algorithm>/<hex> only once both match. So a blob that exists is a
verified blob, and a crash (kill -9) leaves at most an ingest file that GC deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from typing import IO

from criruntime.errors import FailedPrecondition, InvalidArgument, NotFound
from criruntime.image.reference import validate_digest


class DigestMismatch(FailedPrecondition):
    """Bytes received do not match the digest or size that named them."""


def new_hasher(digest: str) -> hashlib._Hash:
    algorithm = digest.partition(":")[0]
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise InvalidArgument(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algorithm)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Ingest:
    """One blob being written. `write` as bytes arrive, then `commit` or `abort`."""

    def __init__(self, store: ContentStore, digest: str, size: int | None) -> None:
        self._store = store
        self.digest = digest
        self.expected_size = size
        self.written = 0
        self._hasher = new_hasher(digest)
        self.path = os.path.join(
            store.ingest_dir, f"{digest.replace(':', '-')}.{secrets.token_hex(6)}"
        )
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, data: bytes) -> None:
        assert self._fd is not None, "ingest already closed"
        self.written += len(data)
        if self.expected_size is not None and self.written > self.expected_size:
            raise DigestMismatch(
                f"blob {self.digest}: more than the expected {self.expected_size} bytes"
            )
        self._hasher.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def reset(self) -> None:
        """Starts over, for a retried download that cannot resume."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.written = 0
        self._hasher = new_hasher(self.digest)

    def commit(self) -> str:
        """Verifies and publishes the blob; returns its path. The ingest file is gone after."""
        assert self._fd is not None
        try:
            if self.expected_size is not None and self.written != self.expected_size:
                raise DigestMismatch(
                    f"blob {self.digest}: got {self.written} bytes, expected {self.expected_size}"
                )
            got = f"{self.digest.partition(':')[0]}:{self._hasher.hexdigest()}"
            if got != self.digest:
                raise DigestMismatch(f"blob {self.digest}: content has digest {got}")
            # fsync before rename: a published name must never point at a torn file.
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            final = self._store.path(self.digest)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(self.path, final)
            return final
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class ContentStore:
    def __init__(self, images_root: str) -> None:
        self.blobs_dir = os.path.join(images_root, "blobs")
        self.ingest_dir = os.path.join(images_root, "ingest")
        os.makedirs(self.blobs_dir, exist_ok=True)
        os.makedirs(self.ingest_dir, exist_ok=True)

    def path(self, digest: str) -> str:
        algorithm, _, encoded = validate_digest(digest).partition(":")
        return os.path.join(self.blobs_dir, algorithm, encoded)

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def ingest(self, digest: str, size: int | None) -> Ingest:
        return Ingest(self, validate_digest(digest), size)

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Stores `data` (verified against `digest` when given); returns its digest."""
        digest = digest or sha256_digest(data)
        if self.exists(digest):
            return digest
        ingest = self.ingest(digest, len(data))
        try:
            ingest.write(data)
        except BaseException:
            ingest.abort()
            raise
        ingest.commit()
        return digest

    def put_stream(self, src: IO[bytes]) -> tuple[str, int]:
        """Stores a stream whose digest is not known in advance (image import); returns
        (digest, size). Hashed while written, published under the digest it turned out to have."""
        path = os.path.join(self.ingest_dir, f"unknown.{secrets.token_hex(6)}")
        hasher = hashlib.sha256()
        size = 0
        try:
            with open(path, "wb") as f:
                while chunk := src.read(1 << 20):
                    hasher.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            digest = "sha256:" + hasher.hexdigest()
            final = self.path(digest)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(path, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        return digest, size

    def read(self, digest: str) -> bytes:
        try:
            with open(self.path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def digests(self) -> Iterator[str]:
        for algorithm in sorted(os.listdir(self.blobs_dir)):
            for encoded in os.listdir(os.path.join(self.blobs_dir, algorithm)):
                yield f"{algorithm}:{encoded}"

    def clear_ingest(self, older_than: float | None = None) -> None:
        """Deletes abandoned ingest files (from a crash). `older_than` is a unix time."""
        for name in os.listdir(self.ingest_dir):
            path = os.path.join(self.ingest_dir, name)
            with contextlib.suppress(FileNotFoundError):
                if older_than is None or os.stat(path).st_mtime < older_than:
                    os.unlink(path)

"""Unpacks one layer tarball into a directory usable as an overlayfs lower dir.

Safety is the point of this module. Every file is created relative to an open directory fd
(openat-style): entry names are cleaned lexically so `..` and absolute paths stay inside the
layer, each parent component is looked up with O_NOFOLLOW, and a symlink met on the way is
resolved by hand *inside* the layer dir, as if the layer dir were `/`. The final component is
never followed: an existing entry is removed first and the new one created with O_EXCL. So no
entry, link target or earlier symlink can make us write outside the layer dir.

Layer whiteouts become overlayfs whiteouts: `.wh.NAME` → a 0/0 character device NAME, and
`.wh..wh..opq` → the `trusted.overlay.opaque=y` xattr on its directory.

Blocking by nature (tar parsing, file writes): callers run `unpack_layer` in an executor thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

import zstandard

from criruntime.errors import FailedPrecondition

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_MAX_SYMLINK_HOPS = 255
_MAX_CACHED_DIRS = 256
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class InvalidLayer(FailedPrecondition):
    """A layer that cannot be unpacked: corrupt, or asking for something impossible."""


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str  # sha256 of the uncompressed tar stream
    size: int  # bytes of file content written


class _HashingReader(io.RawIOBase):
    """Hashes what tarfile reads, so the diff ID is checked in the same pass as extraction."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        # tar writers pad past the end-of-archive marker; the diff ID covers those bytes too.
        while self.read(_CHUNK):
            pass


class _GzipReader(io.RawIOBase):
    """gzip straight through zlib. The blob digest and the diff ID already prove integrity, so
    gzip.GzipFile's per-read CRC and Python-level buffering are pure cost here (measured: about
    a sixth of unpack time). Handles multi-member streams and zero padding as gzip does."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self._read_some(_CHUNK), b""))
        return self._read_some(size)

    def _read_some(self, limit: int) -> bytes:
        while True:
            # eof first: at the end of a member zlib leaves the leftover input in unconsumed_tail
            # as well as in unused_data.
            if self._z.eof:
                rest = self._z.unused_data.lstrip(b"\0")
                while not rest:
                    more = self._raw.read(_CHUNK)
                    if not more:
                        return b""  # the end, after a whole member
                    rest = more.lstrip(b"\0")
                self._z = zlib.decompressobj(wbits=31)  # the next member
                out = self._z.decompress(rest, limit)
            elif self._z.unconsumed_tail:
                out = self._z.decompress(self._z.unconsumed_tail, limit)
            else:
                chunk = self._raw.read(_CHUNK)
                if not chunk:
                    raise EOFError("compressed stream ended before its end-of-stream marker")
                out = self._z.decompress(chunk, limit)
            if out:
                return out


def open_decompressed(raw: BinaryIO) -> IO[bytes]:
    """Sniffs the compression from magic bytes: media types lie more often than headers do."""
    head = raw.read(4)
    raw.seek(0)
    if head.startswith(_GZIP_MAGIC):
        return cast(IO[bytes], _GzipReader(raw))
    if head == _ZSTD_MAGIC:
        return cast(
            IO[bytes],
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True),
        )
    return raw


def _clean(name: str) -> list[str]:
    """Lexically cleans a tar path relative to the layer root: `../x`, `/x`, `./x` → ["x"]."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return parts


class _Tree:
    """The layer dir, reached only through directory fds that never follow a symlink out."""

    def __init__(self, root: str) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        # Real (symlink-free) relative path → open dir fd; cleared whenever a dir is removed.
        self._dirs: dict[str, int] = {}

    def close(self) -> None:
        self.forget()
        os.close(self.root_fd)

    def forget(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _open_real(self, real: list[str]) -> int:
        key = "/".join(real)
        if not key:
            return self.root_fd
        fd = self._dirs.get(key)
        if fd is None:
            if len(self._dirs) >= _MAX_CACHED_DIRS:
                self.forget()
            parent = self._open_real(real[:-1])
            fd = os.open(real[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            self._dirs[key] = fd
        return fd

    def resolve_dir(self, parts: list[str], create: bool) -> tuple[int, list[str]]:
        """Opens directory `parts`, following symlinks as if the layer dir were `/`.

        Missing directories are created (mode 0755) when `create`; returns (fd, real path).
        """
        cached = self._dirs.get("/".join(parts))
        if cached is not None:
            return cached, parts
        todo = list(reversed(parts))
        real: list[str] = []
        fd = self.root_fd
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if real:
                    real.pop()
                fd = self._open_real(real)
                continue
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise InvalidLayer(f"too many levels of symlinks under {'/'.join(parts)!r}")
                target = os.readlink(part, dir_fd=fd)
                if target.startswith("/"):
                    real = []
                    fd = self.root_fd
                todo.extend(reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidLayer(f"{'/'.join([*real, part])!r} is not a directory")
            real.append(part)
            fd = self._open_real(real)
        return fd, real

    def clear_slot(self, dir_fd: int, name: str, keep_dir: bool) -> bool:
        """Makes room for a new entry `name`; returns True if an existing dir is kept."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self.forget()  # cached fds may point into the tree being removed
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
        return False


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out.append((key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape")))
    return out


def _set_xattrs(target: int | str, member: tarfile.TarInfo) -> None:
    for name, value in _xattrs(member):
        try:
            os.setxattr(target, name, value)
        except OSError as e:
            # Filesystems without user/trusted xattr support: skip rather than fail the pull.
            if e.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


class _Extractor:
    def __init__(self, dest: str) -> None:
        self.tree = _Tree(dest)
        self.size = 0
        self._dir_times: list[tuple[list[str], str, int]] = []

    def close(self) -> None:
        self.tree.close()

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _clean(member.name)
        if not parts:
            return  # the layer root itself: its attributes come from the store, not the layer
        base = parts[-1]
        pfd, preal = self.tree.resolve_dir(parts[:-1], create=True)
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(pfd, base)
            return
        keep = self.tree.clear_slot(pfd, base, keep_dir=member.isdir())
        mode = member.mode & 0o7777
        if member.isreg():
            self._regular(tar, member, pfd, base, mode)
        elif member.isdir():
            if not keep:
                os.mkdir(base, 0o700, dir_fd=pfd)
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
            try:
                os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, mode)
                _set_xattrs(fd, member)
            finally:
                os.close(fd)
            # Later entries inside change the dir's mtime, so it is set once they are all in.
            self._dir_times.append((preal, base, int(member.mtime * 1e9)))
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
            os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
            self._utime(pfd, base, member)
        elif member.islnk():
            self._hardlink(member, pfd, base)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = (
                stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            )
            device = os.makedev(member.devmajor, member.devminor) if not member.isfifo() else 0
            os.mknod(base, kind | mode, device, dir_fd=pfd)
            os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
            # mknod applies the umask; chmod after chown also restores bits chown cleared.
            os.chmod(base, mode, dir_fd=pfd, follow_symlinks=True)
            self._utime(pfd, base, member)
        # Other types (GNU sparse maps, volume labels) have no place in a container rootfs.

    def _regular(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, base: str, mode: int
    ) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
        try:
            src = tar.extractfile(member)
            if src is not None:
                while chunk := src.read(_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            self.size += member.size
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, mode)  # after fchown, which clears setuid/setgid
            _set_xattrs(fd, member)  # after fchown, which clears security.capability
            mtime = int(member.mtime * 1e9)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)

    def _hardlink(self, member: tarfile.TarInfo, pfd: int, base: str) -> None:
        target = _clean(member.linkname)
        if not target:
            raise InvalidLayer(f"hardlink {member.name!r} points at the layer root")
        try:
            tfd, _ = self.tree.resolve_dir(target[:-1], create=False)
            os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidLayer(
                f"hardlink {member.name!r} → {member.linkname!r}: target not in this layer"
            ) from None

    def _whiteout(self, pfd: int, base: str) -> None:
        if base == OPAQUE_WHITEOUT:
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if not name or name.startswith(WHITEOUT_PREFIX) or name in (".", ".."):
            return  # aufs metadata (.wh..wh.plnk etc.) has no overlayfs meaning
        self.tree.clear_slot(pfd, name, keep_dir=False)
        os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    def _utime(self, pfd: int, base: str, member: tarfile.TarInfo) -> None:
        mtime = int(member.mtime * 1e9)
        with contextlib.suppress(OSError):
            os.utime(base, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        for preal, base, mtime in reversed(self._dir_times):
            with contextlib.suppress(OSError, InvalidLayer):
                pfd, _ = self.tree.resolve_dir(preal, create=False)
                os.utime(base, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)


def unpack_layer(blob_path: str, dest: str, expected_diff_id: str | None = None) -> UnpackResult:
    """Extracts the (gzip, zstd or plain) tar at `blob_path` into the existing dir `dest`.

    Raises InvalidLayer if the tar is corrupt or its uncompressed digest is not
    `expected_diff_id`; the caller then throws `dest` away.
    """
    with open(blob_path, "rb") as raw:
        try:
            reader = _HashingReader(open_decompressed(raw))
            extractor = _Extractor(dest)
            try:
                with tarfile.open(fileobj=reader, mode="r|", bufsize=_CHUNK) as tar:
                    for member in tar:
                        extractor.entry(tar, member)
                extractor.finish()
            finally:
                extractor.close()
            reader.drain()
        except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError) as e:
            raise InvalidLayer(
                f"layer {os.path.basename(blob_path)}: corrupt archive: {e}"
            ) from None
    diff_id = "sha256:" + reader.hasher.hexdigest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise InvalidLayer(
            f"layer {os.path.basename(blob_path)}: uncompressed digest {diff_id} does not "
            f"match the image config's diff ID {expected_diff_id}"
        )
    return UnpackResult(diff_id=diff_id, size=extractor.size)

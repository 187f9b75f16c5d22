"""Layer extraction: formats, metadata, overlayfs whiteouts, and containment of crafted tars."""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from pathlib import Path

import pytest

from criruntime.image.layer_store import LayerStore, chain_ids
from criruntime.image.unpack import OPAQUE_XATTR, InvalidLayer, unpack_layer
from tests.image.layers import (
    Entry,
    compress,
    directory,
    file,
    hardlink,
    sha256,
    symlink,
    tar_bytes,
)


def _unpack(tmp_path: Path, entries: list[Entry], kind: str = "none") -> Path:
    raw = tar_bytes(entries)
    blob = tmp_path / "blob"
    blob.write_bytes(compress(raw, kind))
    dest = tmp_path / "layer" / "diff"
    dest.mkdir(parents=True)
    result = unpack_layer(str(blob), str(dest), sha256(raw))
    assert result.diff_id == sha256(raw)
    return dest


def _all_paths(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_formats(tmp_path: Path, kind: str) -> None:
    dest = _unpack(tmp_path, [directory("etc"), file("etc/hostname", b"box\n")], kind)
    assert (dest / "etc/hostname").read_bytes() == b"box\n"


def test_metadata_kept(tmp_path: Path) -> None:
    dest = _unpack(
        tmp_path,
        [
            directory("bin", mode=0o751, uid=7, gid=8),
            file("bin/su", b"x", mode=0o4755, uid=0, gid=0),
            file("bin/owned", b"y", mode=0o640, uid=1000, gid=1001),
            file("bin/cap", b"z", mode=0o755, xattrs={"user.note": "hello"}),
            symlink("bin/sh", "busybox"),
            file("bin/busybox", b"bb", mode=0o755),
            hardlink("bin/ls", "bin/busybox"),
            Entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
            Entry("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
        ],
    )
    st = os.stat(dest / "bin", follow_symlinks=False)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o751, 7, 8)
    assert st.st_mtime == 1_600_000_000
    assert stat.S_IMODE(os.stat(dest / "bin/su").st_mode) == 0o4755
    st = os.stat(dest / "bin/owned")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1000, 1001)
    assert os.getxattr(dest / "bin/cap", "user.note") == b"hello"
    assert os.readlink(dest / "bin/sh") == "busybox"
    assert os.stat(dest / "bin/ls").st_ino == os.stat(dest / "bin/busybox").st_ino
    st = os.stat(dest / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert stat.S_ISFIFO(os.stat(dest / "dev/fifo").st_mode)


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    dest = _unpack(
        tmp_path,
        [
            directory("etc"),
            file("etc/.wh.passwd"),
            directory("var/cache"),
            file("var/cache/.wh..wh..opq"),
            file("var/cache/new", b"n"),
        ],
    )
    st = os.stat(dest / "etc/passwd", follow_symlinks=False)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (dest / "etc/.wh.passwd").exists()
    assert os.getxattr(dest / "var/cache", OPAQUE_XATTR) == b"y"
    assert (dest / "var/cache/new").read_bytes() == b"n"
    assert not (dest / "var/cache/.wh..wh..opq").exists()


def test_later_entry_replaces_earlier(tmp_path: Path) -> None:
    dest = _unpack(
        tmp_path,
        [
            directory("a"),
            file("a/x", b"1"),
            file("a", b"now a file"),
            file("b", b"file"),
            directory("b"),
            file("b/y", b"2"),
        ],
    )
    assert (dest / "a").read_bytes() == b"now a file"
    assert (dest / "b/y").read_bytes() == b"2"


def test_multi_member_gzip_with_zero_padding(tmp_path: Path) -> None:
    # Legal gzip: several members back to back, then zero padding (as some tools write).
    big = os.urandom(300_000)  # larger than one read, so members end mid-buffer
    raw = tar_bytes([file("a", big), file("b", b"x" * 200_000)])
    cut = len(raw) // 3
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]) + b"\0" * 1024)
    dest = tmp_path / "d"
    dest.mkdir()
    assert unpack_layer(str(blob), str(dest), sha256(raw)).diff_id == sha256(raw)
    assert (dest / "a").read_bytes() == big


def test_trailing_garbage_after_gzip_refused(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(compress(tar_bytes([file("a", b"1")]), "gzip") + b"not gzip")
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(InvalidLayer, match="corrupt archive"):
        unpack_layer(str(blob), str(dest))


def test_diff_id_mismatch_refused(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(tar_bytes([file("a", b"1")]))
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(InvalidLayer, match="does not match"):
        unpack_layer(str(blob), str(dest), "sha256:" + "0" * 64)


def test_corrupt_archive_refused(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(compress(tar_bytes([file("a", b"1" * 5000)]), "gzip")[:-30])
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(InvalidLayer):
        unpack_layer(str(blob), str(dest))


# ---- containment: nothing may land outside the layer dir -------------------------------------


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    """A layer dir inside `tmp_path`, with a sentinel outside that must stay untouched."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret").write_bytes(b"keep")
    return tmp_path


def _assert_outside_untouched(tmp: Path) -> None:
    assert _all_paths(tmp / "outside") == {"secret"}
    assert (tmp / "outside/secret").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp.iterdir()) == ["blob", "layer", "outside"]


def test_dotdot_is_contained(jail: Path) -> None:
    dest = _unpack(jail, [file("../../outside/secret", b"pwned"), file("a/../../../x", b"x")])
    _assert_outside_untouched(jail)
    assert (dest / "outside/secret").read_bytes() == b"pwned"
    assert (dest / "x").read_bytes() == b"x"


def test_absolute_path_is_contained(jail: Path) -> None:
    dest = _unpack(jail, [file(str(jail / "outside/secret"), b"pwned")])
    _assert_outside_untouched(jail)
    assert (dest / str(jail / "outside/secret").lstrip("/")).read_bytes() == b"pwned"


def test_write_through_earlier_symlink_is_contained(jail: Path) -> None:
    outside = str(jail / "outside")
    dest = _unpack(
        jail,
        [
            symlink("abs", outside),
            symlink("rel", "../../outside"),
            file("abs/secret", b"pwned"),
            file("rel/secret", b"pwned"),
            file("rel/new", b"pwned"),
        ],
    )
    _assert_outside_untouched(jail)
    # The symlinks were followed as if the layer dir were `/`.
    assert (dest / outside.lstrip("/") / "secret").read_bytes() == b"pwned"
    assert (dest / "outside/new").read_bytes() == b"pwned"


def test_symlink_as_final_component_is_replaced_not_followed(jail: Path) -> None:
    dest = _unpack(jail, [symlink("s", str(jail / "outside/secret")), file("s", b"mine")])
    _assert_outside_untouched(jail)
    assert not os.path.islink(dest / "s") and (dest / "s").read_bytes() == b"mine"


def test_hardlink_escape_refused(jail: Path) -> None:
    with pytest.raises(InvalidLayer, match="not in this layer"):
        _unpack(jail, [hardlink("h", "../../outside/secret")])
    _assert_outside_untouched(jail)


def test_hardlink_through_symlink_escape_refused(jail: Path) -> None:
    with pytest.raises(InvalidLayer, match="not in this layer"):
        _unpack(jail, [symlink("evil", str(jail / "outside")), hardlink("h", "evil/secret")])
    _assert_outside_untouched(jail)


def test_whiteout_through_symlink_is_contained(jail: Path) -> None:
    _unpack(jail, [symlink("evil", str(jail / "outside")), file("evil/.wh.secret")])
    _assert_outside_untouched(jail)


def test_symlink_loop_refused(jail: Path) -> None:
    with pytest.raises(InvalidLayer, match="symlinks"):
        _unpack(jail, [symlink("a", "b"), symlink("b", "a"), file("a/x", b"")])


# ---- layer store -----------------------------------------------------------------------------


def test_chain_ids() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_ids([a]) == [a]
    assert chain_ids([a, b])[1] == sha256(f"{a} {b}".encode())


def test_layer_store_commit_and_remove(tmp_path: Path) -> None:
    store = LayerStore(str(tmp_path / "images"))
    raw = tar_bytes([file("f", b"data")])
    blob = tmp_path / "blob"
    blob.write_bytes(raw)
    (cid,) = chain_ids([sha256(raw)])
    info = store.unpack(cid, str(blob), sha256(raw))
    assert info.size == 4 and store.exists(cid)
    assert (Path(store.images_root) / store.short_link(cid) / "f").read_bytes() == b"data"
    assert store.unpack(cid, str(blob), sha256(raw)) == info  # second time: no work
    with pytest.raises(InvalidLayer):
        store.unpack(chain_ids([sha256(b"x")])[0], str(blob), sha256(b"x"))
    assert list(store.chain_ids()) == [cid]
    assert not [n for n in os.listdir(store.layers_dir) if n.startswith(".")]
    store.remove(cid)
    assert not store.exists(cid) and list(store.chain_ids()) == []

"""Unpacked layers, one per chain ID, under <root>/images/layers/<hex>/diff.

A layer is unpacked into layers/.tmp-*/ and renamed to its chain ID only when complete and
verified, so an existing layer dir is always whole; kill -9 leaves a .tmp-* dir GC deletes.

overlayfs takes lower dirs in one mount option string limited to a page (4096 bytes); 128
absolute layer paths would not fit. So each layer also gets a short link images/l/<20 hex> →
../layers/<hex>/diff, and mounts name lower dirs as `l/<id>` relative to images/ (the way
containers/storage does it); `lowerdir_option` builds that string.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

from criruntime.errors import NotFound
from criruntime.image.unpack import unpack_layer

_SHORT_ID_LEN = 20


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            digest = hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()
            out.append(f"sha256:{digest}")
    return out


@dataclass(frozen=True)
class LayerInfo:
    chain_id: str
    diff_id: str
    size: int


class LayerStore:
    def __init__(self, images_root: str) -> None:
        self.images_root = images_root
        self.layers_dir = os.path.join(images_root, "layers")
        self.links_dir = os.path.join(images_root, "l")
        os.makedirs(self.layers_dir, exist_ok=True)
        os.makedirs(self.links_dir, exist_ok=True)

    @staticmethod
    def _hex(chain_id: str) -> str:
        algorithm, _, encoded = chain_id.partition(":")
        if algorithm != "sha256" or len(encoded) != 64:
            raise ValueError(f"not a sha256 chain ID: {chain_id!r}")
        return encoded

    def layer_dir(self, chain_id: str) -> str:
        return os.path.join(self.layers_dir, self._hex(chain_id))

    def diff_dir(self, chain_id: str) -> str:
        """The overlayfs lower dir of this layer (absolute path)."""
        return os.path.join(self.layer_dir(chain_id), "diff")

    def short_link(self, chain_id: str) -> str:
        """The lower dir relative to `images_root`, for short mount options."""
        return "l/" + self._hex(chain_id)[:_SHORT_ID_LEN]

    def exists(self, chain_id: str) -> bool:
        return os.path.isdir(self.layer_dir(chain_id))

    def info(self, chain_id: str) -> LayerInfo:
        try:
            with open(os.path.join(self.layer_dir(chain_id), "layer.json")) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise NotFound(f"layer {chain_id} not found") from None
        return LayerInfo(chain_id, str(data["diff_id"]), int(data["size"]))

    def unpack(self, chain_id: str, blob_path: str, diff_id: str) -> LayerInfo:
        """Unpacks the blob as layer `chain_id` unless present. Blocking: run in an executor."""
        if self.exists(chain_id):
            self._ensure_link(chain_id)
            return self.info(chain_id)
        tmp = os.path.join(self.layers_dir, f".tmp-{secrets.token_hex(8)}")
        diff = os.path.join(tmp, "diff")
        os.makedirs(diff, mode=0o755)
        try:
            result = unpack_layer(blob_path, diff, diff_id)
            info = {"chain_id": chain_id, "diff_id": result.diff_id, "size": result.size}
            with open(os.path.join(tmp, "layer.json"), "w") as f:
                json.dump(info, f)
            try:
                os.rename(tmp, self.layer_dir(chain_id))
            except OSError:
                # Another process (an import while the daemon pulls) committed it first.
                if not self.exists(chain_id):
                    raise
                self._remove_tree(tmp)
        except BaseException:
            self._remove_tree(tmp)
            raise
        self._ensure_link(chain_id)
        return LayerInfo(chain_id, result.diff_id, result.size)

    def _ensure_link(self, chain_id: str) -> None:
        link = os.path.join(self.images_root, self.short_link(chain_id))
        target = os.path.join("..", "layers", self._hex(chain_id), "diff")
        with contextlib.suppress(FileExistsError):
            os.symlink(target, link)

    def lower_dirs(self, chain_ids_bottom_up: list[str]) -> list[str]:
        """Absolute short-link paths of the layers, lowest first: short enough that a mount
        made relative to their common parent (images/l) fits 128 layers in one page."""
        for chain_id in chain_ids_bottom_up:
            self._ensure_link(chain_id)
        return [os.path.join(self.images_root, self.short_link(c)) for c in chain_ids_bottom_up]

    def lowerdir_option(self, chain_ids_bottom_up: list[str]) -> str:
        """`lowerdir=l/top:…:l/bottom`, valid with the mount's cwd at `images_root`."""
        for chain_id in chain_ids_bottom_up:
            self._ensure_link(chain_id)
        return "lowerdir=" + ":".join(self.short_link(c) for c in reversed(chain_ids_bottom_up))

    def chain_ids(self) -> Iterator[str]:
        for name in os.listdir(self.layers_dir):
            if not name.startswith("."):
                yield f"sha256:{name}"

    def remove(self, chain_id: str) -> None:
        """Renames the layer away first, so it is either whole or absent, then deletes it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.images_root, self.short_link(chain_id)))
        doomed = os.path.join(self.layers_dir, f".del-{secrets.token_hex(8)}")
        try:
            os.rename(self.layer_dir(chain_id), doomed)
        except FileNotFoundError:
            return
        self._remove_tree(doomed)

    def clear_temporary(self) -> None:
        """Deletes half-unpacked and half-deleted layers left by a crash."""
        for name in os.listdir(self.layers_dir):
            if name.startswith((".tmp-", ".del-")):
                self._remove_tree(os.path.join(self.layers_dir, name))

    @staticmethod
    def _remove_tree(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

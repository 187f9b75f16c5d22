"""ImageFsInfo: bytes and inodes the image store really uses, and its mountpoint."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from typing import TYPE_CHECKING

from criruntime.api.runtime.v1 import api_pb2 as api

if TYPE_CHECKING:
    from criruntime.image.service import ImageService


def disk_usage(root: str) -> tuple[int, int]:
    """(bytes, inodes) under `root`, as du counts them: allocated blocks, hardlinks once."""
    seen: set[tuple[int, int]] = set()
    used = inodes = 0
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed by GC while we walk
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            used += st.st_blocks * 512
            inodes += 1
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return used, inodes


async def image_fs_info(svc: ImageService) -> api.ImageFsInfoResponse:
    loop = asyncio.get_running_loop()
    used, inodes = await loop.run_in_executor(None, disk_usage, svc.root)
    usage = api.FilesystemUsage(
        timestamp=time.time_ns(),
        fs_id=api.FilesystemIdentifier(mountpoint=svc.root),
        used_bytes=api.UInt64Value(value=used),
        inodes_used=api.UInt64Value(value=inodes),
    )
    return api.ImageFsInfoResponse(image_filesystems=[usage])

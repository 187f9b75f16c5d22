"""What an OCI runtime binary can do, from `<runtime> features` (runc ≥ 1.1, crun ≥ 1.5)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeFeatures:
    path: str | None  # resolved binary, None when not installed
    recursive_read_only_mounts: bool = False


@functools.cache
def probe(binary: str) -> RuntimeFeatures:
    """Asks the runtime once per binary; cached because the answer only changes on upgrade."""
    path = shutil.which(binary)
    if path is None:
        return RuntimeFeatures(path=None)
    try:
        out = subprocess.run([path, "features"], capture_output=True, check=True, timeout=10).stdout
        features = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return RuntimeFeatures(path=path)  # too old to tell: claim nothing
    mount_options = set(features.get("mountOptions") or [])
    return RuntimeFeatures(
        path=path,
        # rro needs runtime support and a kernel with mount_setattr (5.12+); runc checks the kernel.
        recursive_read_only_mounts="rro" in mount_options,
    )

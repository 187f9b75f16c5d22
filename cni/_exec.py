"""Exec'ing another CNI plugin by type, as SPEC "Delegated plugins" says.

Used by bridge for any IPAM type that is not our in-process host-local.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from cni.errors import CNIError, ErrorCode


def find_plugin(plugin_type: str, cni_path: str) -> str:
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid plugin type {plugin_type!r}")
    dirs = [d for d in cni_path.split(os.pathsep) if d]
    for d in dirs:
        candidate = os.path.join(d, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(ErrorCode.INTERNAL, f"failed to find plugin {plugin_type!r} in path {dirs}")


def exec_plugin(
    plugin_type: str,
    netconf: Mapping[str, Any],
    env: Mapping[str, str],
) -> dict[str, Any] | None:
    """Run the plugin; returns its parsed stdout (None if empty).

    A non-zero exit raises CNIError with the delegate's own code and message,
    so the caller reports the delegate's error unchanged (as libcni does).
    """
    binary = find_plugin(plugin_type, env.get("CNI_PATH", ""))
    stdin = json.dumps(netconf).encode()
    try:
        proc = subprocess.run(
            [binary], input=stdin, env=dict(env), capture_output=True, check=False
        )
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"failed to exec {binary}: {exc}") from exc
    out = proc.stdout.strip()
    if proc.returncode != 0:
        try:
            err: Any = json.loads(out) if out else None
        except ValueError:
            err = None
        stderr = proc.stderr.decode(errors="replace").strip()
        raise CNIError.from_json(
            err, fallback=f"{plugin_type} failed (exit {proc.returncode}): {stderr or out.decode()}"
        )
    if not out:
        return None
    try:
        result = json.loads(out)
    except ValueError as exc:
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"{plugin_type} printed invalid JSON: {exc}"
        ) from exc
    if not isinstance(result, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{plugin_type} printed a non-object result")
    return result

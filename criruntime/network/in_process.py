"""The project's own CNI plugins (cni/), run inside the daemon.

`cni.invoke` has exactly the executables' semantics (same config, env and result or error
object), so the executor treats a built-in type like any plugin, minus the ~100 ms of starting a
Python interpreter that imports pyroute2. The call blocks (netlink, setns in helper threads), so
it runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from types import ModuleType


class OwnPlugins:
    def __init__(self, module: ModuleType) -> None:
        self._cni = module

    @classmethod
    def load(cls) -> OwnPlugins | None:
        try:
            import cni
        except ImportError:
            return None
        return cls(cni)

    def handles(self, plugin_type: str) -> bool:
        return bool(self._cni.is_builtin(plugin_type))

    def _call(self, plugin_type: str, env: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        try:
            out = self._cni.invoke(plugin_type, env["CNI_COMMAND"], stdin, dict(env))
        except self._cni.CNIError as e:
            version = "1.0.0"
            with contextlib.suppress(ValueError):
                version = str(json.loads(stdin).get("cniVersion") or version)
            return 1, json.dumps(e.to_json(version)).encode()
        return 0, json.dumps(out).encode() if out is not None else b""

    async def run(
        self, plugin_type: str, env: Mapping[str, str], stdin: bytes, time_limit: float
    ) -> tuple[int, bytes]:
        # A plugin thread cannot be killed; on timeout the caller gets the error and the
        # thread finishes on its own, as an exec'd plugin would after SIGKILL... minus the kill.
        return await asyncio.wait_for(
            asyncio.to_thread(self._call, plugin_type, env, stdin), time_limit
        )

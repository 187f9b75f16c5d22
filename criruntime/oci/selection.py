"""The runtime handlers, built once at start-up, and which of them is the default and why.

A handler whose binary is crun runs in a private mount namespace (mountns.py) on a host whose
cgroup layout crun refuses. With `default_runtime = "auto"` a probe decides: crun when it can
run a container on this host (created, started, with v1 cgroup limits, deleted), else runc.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from criruntime.config import AUTO_RUNTIME, Config
from criruntime.errors import FailedPrecondition
from criruntime.oci import mountns
from criruntime.oci.runtime import OciRuntime

log = logging.getLogger("criruntime.oci")

_PROBE_TIMEOUT = 10.0


def _needs_private_namespace(binary: str) -> bool:
    # crun 1.8 is the one refusing the hybrid layout; runc handles it on its own.
    return os.path.basename(binary) == "crun"


@dataclass
class RuntimeSet:
    handlers: dict[str, OciRuntime]
    default: str
    reason: str
    namespace: mountns.PrivateMountNamespace | None = None

    @classmethod
    def open(cls, config: Config) -> RuntimeSet:
        hidden = mountns.hidden_mounts(mountns.read_mounts())
        namespace: mountns.PrivateMountNamespace | None = None
        if hidden and any(
            _needs_private_namespace(h.path) and shutil.which(h.path)
            for h in config.runtimes.values()
        ):
            try:
                namespace = mountns.PrivateMountNamespace.prepare(hidden, config.state)
            except (FailedPrecondition, OSError) as e:
                # crun then fails on this host as it would alone; its probe says so, and
                # the default falls back to runc.
                log.warning("no private mount namespace for crun: %s", e)
        handlers = {
            name: OciRuntime(
                name,
                handler.path,
                config.state,
                namespace=namespace if _needs_private_namespace(handler.path) else None,
            )
            for name, handler in config.runtimes.items()
        }
        default, reason = _choose_default(config, handlers)
        log.info("default runtime handler %s: %s", default, reason)
        return cls(handlers, default, reason, namespace)

    def resolve(self, config: Config) -> Config:
        """`config` with the chosen default in place of "auto"."""
        return dataclasses.replace(config, default_runtime=self.default)

    def info(self) -> dict[str, Any]:
        """What Status(verbose) reports: the default, why, and where each handler runs."""
        return {
            "defaultRuntime": self.default,
            "reason": self.reason,
            "handlers": {
                name: {
                    "path": runtime.binary,
                    "mountNamespace": (
                        runtime.namespace.describe() if runtime.namespace is not None else "host"
                    ),
                    "cgroupControllers": sorted(runtime.cgroup_controllers)
                    if runtime.cgroup_controllers is not None
                    else "host",
                }
                for name, runtime in sorted(self.handlers.items())
            },
        }

    def close(self) -> None:
        if self.namespace is not None:
            self.namespace.close()


def _choose_default(config: Config, handlers: dict[str, OciRuntime]) -> tuple[str, str]:
    if config.default_runtime != AUTO_RUNTIME:
        return config.default_runtime, "set by default_runtime in the config"
    crun = handlers["crun"]
    problem = probe(crun)
    if problem is None:
        where = f" in its {crun.namespace.describe()}" if crun.namespace is not None else ""
        return "crun", f"auto: crun ran a probe container on this host{where}"
    return "runc", f"auto: crun cannot run containers on this host: {problem}"


def probe(runtime: OciRuntime) -> str | None:
    """Runs a throwaway container (`/usr/bin/true` over a read-only bind of the host's /usr,
    with memory and pids limits) to its exit; None when that worked, else what went wrong."""
    try:
        runtime.resolved_binary()
    except FailedPrecondition as e:
        return str(e)
    token = secrets.token_hex(6)
    bundle = os.path.join(runtime.root, f".probe-{token}")
    cgroup = f"/criruntime-probe-{token}"
    os.makedirs(os.path.join(bundle, "rootfs", "usr"))
    try:
        os.mkdir(os.path.join(bundle, "rootfs", "dev"))  # the runtime mounts its /dev there
        for name in ("bin", "lib", "lib64", "sbin"):
            os.symlink(f"usr/{name}", os.path.join(bundle, "rootfs", name))
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(_probe_spec(cgroup), f)
        argv = runtime.argv("run", "--bundle", bundle, f"probe-{token}")
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=_PROBE_TIMEOUT, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return f"the probe container did not finish within {_PROBE_TIMEOUT:.0f}s"
        if done.returncode != 0:
            text = (done.stderr or done.stdout).decode(errors="replace").strip()
            return text.splitlines()[-1] if text else f"exit code {done.returncode}"
        return None
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
        _remove_cgroup(cgroup)


def _probe_spec(cgroup: str) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {
            "args": ["/usr/bin/true"],
            "cwd": "/",
            "env": ["PATH=/usr/bin"],
            "user": {"uid": 0, "gid": 0},
        },
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"}],
            "cgroupsPath": cgroup,
            "resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 16}},
        },
    }


def _remove_cgroup(cgroup: str) -> None:
    # The runtime removes it when the container is deleted; this covers a failed probe.
    for hierarchy in os.listdir(mountns.CGROUP_ROOT):
        path = os.path.join(mountns.CGROUP_ROOT, hierarchy, cgroup.lstrip("/"))
        if os.path.isdir(path):
            try:
                os.rmdir(path)
            except OSError as e:
                log.warning("cannot remove the probe cgroup %s: %s", path, e)

"""A CNI 1.0 executor: runs a conflist's plugins for ADD, CHECK and DEL, as libcni does.

- ADD runs the plugins in order, each given the previous one's result as `prevResult`; the last
  result is cached in libcni's layout (`<cache_dir>/results/<net>-<containerID>-<ifname>`,
  kind "cniCacheV1"), so other tools and runtimes can read it.
- DEL runs every plugin in reverse (one failing does not skip the rest) with the cached result
  as `prevResult`, using the cached config when there is one (the network torn down is the
  network that was set up), then drops the cache.
  DEL of a network that was never added is not an error.
- CHECK runs the plugins in order with the cached result.
- Capability args (`runtimeConfig`) reach a plugin only for the capabilities it declares.
- Each plugin call has a timeout; a failing plugin's CNI error (code, msg, details) is raised as
  PluginError naming the plugin.

Plugins are executables found in bin_dirs, except types an `InProcessRunner` claims: those run
inside the daemon with the same stdin/env/stdout contract, without paying a process start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from criruntime.child import Child
from criruntime.network.cni_config import NetworkConfigList, find_plugin

log = logging.getLogger("criruntime.cni")

DEFAULT_PLUGIN_TIMEOUT = 60.0
# A result or error is a few KB; past this a plugin is broken, and the daemon keeps no more of
# its output than this (each stream) however much it writes.
MAX_PLUGIN_OUTPUT = 1 << 20
CACHE_KIND = "cniCacheV1"


class PluginError(Exception):
    """A plugin failed; str() is what the CRI caller sees."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        text = f"plugin type={plugin!r} failed ({command}): {msg}"
        if details:
            text += f": {details}"
        if code:
            text += f" (CNI error code {code})"
        super().__init__(text)
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details


class InProcessRunner(Protocol):
    """Runs a plugin type inside the daemon with exactly the executable's contract."""

    def handles(self, plugin_type: str) -> bool: ...

    async def run(
        self, plugin_type: str, env: Mapping[str, str], stdin: bytes, time_limit: float
    ) -> tuple[int, bytes]:
        """Returns (exit status, stdout) as the executable would."""
        ...


@dataclass(frozen=True)
class RuntimeConf:
    container_id: str
    netns: str
    ifname: str = "eth0"
    args: Sequence[tuple[str, str]] = ()  # CNI_ARGS, e.g. K8S_POD_NAME
    capability_args: Mapping[str, Any] = field(default_factory=dict)


def version_at_least(version: str, minimum: tuple[int, int, int]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        return False
    return parts >= minimum


class CniExecutor:
    def __init__(
        self,
        bin_dirs: Sequence[str],
        cache_dir: str,
        *,
        plugin_timeout: float = DEFAULT_PLUGIN_TIMEOUT,
        in_process: InProcessRunner | None = None,
    ) -> None:
        self.bin_dirs = list(bin_dirs)
        self.cache_dir = cache_dir
        self.plugin_timeout = plugin_timeout
        self.in_process = in_process

    # ---- the three operations -----------------------------------------------------------

    async def add(self, net: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any]:
        prev: dict[str, Any] | None = None
        for plugin in net.plugins:
            conf = self._plugin_conf(net, plugin, prev, rt)
            out = await self._invoke("ADD", plugin["type"], conf, rt)
            prev = out if out is not None else prev
        if prev is None:
            raise PluginError(net.plugins[-1]["type"], "ADD", 0, "no result from the plugin chain")
        self._write_cache(net, rt, prev)
        return prev

    async def check(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        if not version_at_least(net.cni_version, (0, 4, 0)):
            raise PluginError(
                net.name, "CHECK", 1, f"CHECK needs cniVersion >= 0.4.0, not {net.cni_version}"
            )
        cached = self.cached(net.name, rt)
        if cached is None:
            raise PluginError(net.name, "CHECK", 3, f"no cached result for {rt.container_id}")
        for plugin in net.plugins:
            conf = self._plugin_conf(net, plugin, cached.get("result"), rt)
            await self._invoke("CHECK", plugin["type"], conf, rt)

    async def delete(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        cached = self.cached(net.name, rt)
        prev: dict[str, Any] | None = None
        if cached is not None:
            prev = cached.get("result")
            with contextlib.suppress(Exception):
                net = _cached_config(cached, net)
        if not version_at_least(net.cni_version, (0, 4, 0)):
            prev = None  # prevResult on DEL arrived with 0.4.0
        # Unlike libcni, a failing plugin does not stop the others: each releases what it holds
        # (an IP, a veth, iptables rules), and the first error is raised at the end, cache kept.
        errors: list[PluginError] = []
        for plugin in reversed(net.plugins):
            conf = self._plugin_conf(net, plugin, prev, rt)
            try:
                await self._invoke("DEL", plugin["type"], conf, rt)
            except PluginError as e:
                errors.append(e)
        if errors:
            raise errors[0]
        self._drop_cache(net.name, rt)

    # ---- libcni cache -------------------------------------------------------------------

    def cache_path(self, net_name: str, rt: RuntimeConf) -> str:
        return os.path.join(self.cache_dir, "results", f"{net_name}-{rt.container_id}-{rt.ifname}")

    def cached(self, net_name: str, rt: RuntimeConf) -> dict[str, Any] | None:
        try:
            with open(self.cache_path(net_name, rt), "rb") as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_cache(self, net: NetworkConfigList, rt: RuntimeConf, result: dict[str, Any]) -> None:
        path = self.cache_path(net.name, rt)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        entry: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": rt.container_id,
            "config": base64.b64encode(json.dumps(net.raw).encode()).decode(),
            "ifName": rt.ifname,
            "networkName": net.name,
            "netns": rt.netns,
            "result": result,
        }
        if rt.args:
            entry["cniArgs"] = [list(a) for a in rt.args]
        if rt.capability_args:
            entry["capabilityArgs"] = dict(rt.capability_args)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)

    def _drop_cache(self, net_name: str, rt: RuntimeConf) -> None:
        # With the .tmp a daemon killed mid-write left: recovery tears that pod down through here.
        path = self.cache_path(net_name, rt)
        for leftover in (path, path + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)

    # ---- one plugin call ------------------------------------------------------------------

    @staticmethod
    def _plugin_conf(
        net: NetworkConfigList,
        plugin: dict[str, Any],
        prev: dict[str, Any] | None,
        rt: RuntimeConf,
    ) -> dict[str, Any]:
        """libcni's buildOneConfig: name/cniVersion from the list, prevResult, and the
        runtimeConfig entries for the capabilities this plugin declares."""
        conf = copy.deepcopy(plugin)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        if prev is not None:
            conf["prevResult"] = prev
        caps = plugin.get("capabilities")
        if isinstance(caps, dict):
            runtime_config = {
                k: rt.capability_args[k]
                for k, enabled in caps.items()
                if enabled is True and k in rt.capability_args
            }
            if runtime_config:
                conf["runtimeConfig"] = runtime_config
        return conf

    def _env(self, command: str, rt: RuntimeConf) -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": rt.container_id,
            "CNI_NETNS": rt.netns,
            "CNI_IFNAME": rt.ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in rt.args),
            "CNI_PATH": os.pathsep.join(self.bin_dirs),
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        }

    async def _invoke(
        self, command: str, plugin_type: str, conf: dict[str, Any], rt: RuntimeConf
    ) -> dict[str, Any] | None:
        env = self._env(command, rt)
        stdin = json.dumps(conf).encode()
        started = time.monotonic()
        if self.in_process is not None and self.in_process.handles(plugin_type):
            try:
                status, stdout = await self.in_process.run(
                    plugin_type, env, stdin, self.plugin_timeout
                )
            except TimeoutError:
                raise PluginError(
                    plugin_type, command, 0, f"timed out after {self.plugin_timeout:g}s"
                ) from None
            stderr = b""
            how = "in-process"
        else:
            status, stdout, stderr = await self._exec(command, plugin_type, env, stdin)
            how = "exec"
        log.debug(
            "cni %s %s (%s) for %s: status %d in %.1f ms",
            command, plugin_type, how, rt.container_id[:12], status,
            (time.monotonic() - started) * 1000,
        )  # fmt: skip
        if len(stdout) > MAX_PLUGIN_OUTPUT:
            raise PluginError(
                plugin_type, command, 0, f"wrote more than {MAX_PLUGIN_OUTPUT} bytes of output"
            )
        if status != 0:
            raise _plugin_error(plugin_type, command, status, stdout, stderr)
        if command != "ADD" or not stdout.strip():
            return None
        try:
            result = json.loads(stdout)
        except ValueError:
            raise PluginError(
                plugin_type, command, 0, f"result is not JSON: {stdout[:200]!r}"
            ) from None
        if not isinstance(result, dict):
            raise PluginError(plugin_type, command, 0, "result is not a JSON object")
        _check_ips(plugin_type, result)
        return result

    async def _exec(
        self, command: str, plugin_type: str, env: dict[str, str], stdin: bytes
    ) -> tuple[int, bytes, bytes]:
        path = find_plugin(plugin_type, self.bin_dirs)
        if path is None:
            raise PluginError(
                plugin_type, command, 0,
                f"failed to find plugin {plugin_type!r} in path {self.bin_dirs}",
            )  # fmt: skip
        child = Child([path], stdin=stdin, env=env)
        try:
            code, stdout, stderr = await asyncio.wait_for(
                child.communicate(MAX_PLUGIN_OUTPUT + 1), self.plugin_timeout
            )
        except TimeoutError:
            raise PluginError(
                plugin_type, command, 0, f"timed out after {self.plugin_timeout:g}s"
            ) from None
        return code, stdout, stderr


def _check_ips(plugin_type: str, result: Mapping[str, Any]) -> None:
    """The result's addresses are CIDRs, as libcni's parsing insists: a pod IP kubelet cannot
    parse must fail the ADD, not reach PodSandboxStatus."""
    ips = result.get("ips")
    if ips is None:
        return
    if not isinstance(ips, list):
        raise PluginError(plugin_type, "ADD", 0, f"result's ips is not a list: {ips!r}"[:300])
    for entry in ips:
        address = entry.get("address") if isinstance(entry, dict) else None
        try:
            ipaddress.ip_interface(str(address))
        except ValueError:
            raise PluginError(
                plugin_type, "ADD", 0, f"result has an invalid address: {address!r}"[:300]
            ) from None


def _plugin_error(
    plugin_type: str, command: str, status: int, stdout: bytes, stderr: bytes
) -> PluginError:
    try:
        err = json.loads(stdout)
    except ValueError:
        err = None
    if isinstance(err, dict) and "msg" in err:
        return PluginError(
            plugin_type,
            command,
            int(err.get("code") or 0),
            str(err.get("msg")),
            str(err.get("details") or ""),
        )
    text = (stderr or stdout).decode(errors="replace").strip() or f"exit status {status}"
    return PluginError(plugin_type, command, 0, text)


def _cached_config(cached: dict[str, Any], current: NetworkConfigList) -> NetworkConfigList:
    raw = json.loads(base64.b64decode(cached["config"]))
    plugins = raw.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        return current
    return NetworkConfigList(
        name=str(raw.get("name", current.name)),
        cni_version=str(raw.get("cniVersion", current.cni_version)),
        plugins=plugins,
        path=current.path,
        raw=raw,
    )


def result_ips(result: Mapping[str, Any]) -> list[str]:
    """The pod IPs of a result (prefix length dropped), IPv4 first as kubelet's primary IP.
    0.2.0-era results with ip4/ip6 are read too."""
    addresses: list[str] = []
    for entry in result.get("ips") or []:
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            addresses.append(entry["address"].split("/")[0])
    for key in ("ip4", "ip6"):
        legacy = result.get(key)
        if isinstance(legacy, dict) and isinstance(legacy.get("ip"), str):
            addresses.append(legacy["ip"].split("/")[0])
    return sorted(addresses, key=lambda a: ":" in a)

"""The CNI protocol (SPEC 1.0.0) shared by every plugin in this package.

One dispatcher serves both entry points, so they cannot drift apart:
- `main_for(type)`: the executable — CNI_* env, config on stdin, result or
  error JSON on stdout, exit status 0/1 (as the reference `skel` package);
- `invoke(type, command, netconf, env)`: the daemon's in-process fast path —
  the same checks and the same result dict, errors raised as CNIError.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cni._types import CURRENT_VERSION, SUPPORTED_VERSIONS, Result, version_tuple
from cni.errors import CNIError, ErrorCode

# Type name (the executable's name in CNI_PATH) -> module implementing it.
PLUGIN_MODULES: dict[str, str] = {
    "criruntime-bridge": "cni.bridge",
    "criruntime-host-local": "cni.host_local",
    "criruntime-portmap": "cni.portmap",
    "criruntime-loopback": "cni.loopback",
}

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")

# utils.ValidateContainerID / ValidateNetworkName in libcni.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_MAX_IFNAME = 15


@dataclass(frozen=True)
class CmdArgs:
    """What a plugin command gets: the CNI_* variables and the parsed config."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    path: str
    netconf: dict[str, Any]
    # The full environment, handed on when we exec a delegated plugin.
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def cni_version(self) -> str:
        return str(self.netconf.get("cniVersion") or "")

    @property
    def name(self) -> str:
        return str(self.netconf.get("name") or "")

    @property
    def runtime_config(self) -> dict[str, Any]:
        rc = self.netconf.get("runtimeConfig")
        if rc is None:
            return {}
        if not isinstance(rc, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, "runtimeConfig must be an object")
        return rc

    def prev_result(self) -> Result | None:
        raw = self.netconf.get("prevResult")
        if raw is None:
            return None
        if isinstance(raw, dict) and "cniVersion" not in raw:
            # The runtime injects prevResult in the config's version.
            raw = {**raw, "cniVersion": self.cni_version}
        try:
            return Result.from_json(raw)
        except CNIError as exc:
            raise CNIError(exc.code, f"could not parse prevResult: {exc.msg}", exc.details) from exc

    def cni_args(self) -> dict[str, str]:
        """CNI_ARGS "K1=V1;K2=V2" (unknown keys are ignored, as IgnoreUnknown=1)."""
        out: dict[str, str] = {}
        if not self.args:
            return out
        for pair in self.args.split(";"):
            if not pair:
                continue
            key, sep, value = pair.partition("=")
            if not sep:
                raise CNIError(ErrorCode.INVALID_ENVIRONMENT, f"ARGS: invalid pair {pair!r}")
            out[key] = value
        return out

    def env_for(self, command: str) -> dict[str, str]:
        """The environment for exec'ing a delegate plugin (SPEC: same vars)."""
        env = dict(self.environ)
        env.update(
            {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": self.container_id,
                "CNI_NETNS": self.netns,
                "CNI_IFNAME": self.ifname,
                "CNI_ARGS": self.args,
                "CNI_PATH": self.path,
            }
        )
        return env


@dataclass(frozen=True)
class Plugin:
    """A plugin's three commands. ADD returns the 1.0.0-shaped result."""

    name: str
    add: Callable[[CmdArgs], Result]
    delete: Callable[[CmdArgs], None]
    check: Callable[[CmdArgs], None]


def load_plugin(plugin_type: str) -> Plugin:
    module_name = PLUGIN_MODULES.get(plugin_type)
    if module_name is None:
        raise CNIError(ErrorCode.INTERNAL, f"unknown built-in plugin type {plugin_type!r}")
    plugin = getattr(importlib.import_module(module_name), "PLUGIN", None)
    if not isinstance(plugin, Plugin):
        raise CNIError(ErrorCode.INTERNAL, f"{module_name} does not define PLUGIN")
    return plugin


def version_info() -> dict[str, Any]:
    return {"cniVersion": CURRENT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


def _require_env(command: str, env: Mapping[str, str]) -> None:
    required = ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]
    if command in ("ADD", "CHECK"):
        required.insert(1, "CNI_NETNS")
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing"
        )
    container_id = env["CNI_CONTAINERID"]
    if not _NAME_RE.match(container_id):
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT, "invalid characters in containerID", container_id
        )
    ifname = env["CNI_IFNAME"]
    if len(ifname) > _MAX_IFNAME:
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT,
            "interface name is too long",
            f"interface name should be less than {_MAX_IFNAME + 1} characters",
        )
    if ifname in (".", "..") or any(c in "/:" or c.isspace() for c in ifname):
        raise CNIError(
            ErrorCode.INVALID_ENVIRONMENT,
            "interface name contains / or : or whitespace characters, or is . or ..",
        )


def _decode_config(stdin: bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(stdin, bytes | bytearray):
        try:
            conf = json.loads(stdin)
        except ValueError as exc:
            raise CNIError(
                ErrorCode.DECODING_FAILURE, f"error unmarshall network config: {exc}"
            ) from exc
    else:
        # A JSON round trip gives the in-process path exactly the executable's
        # view (JSON types only, no shared mutable objects with the caller).
        try:
            conf = json.loads(json.dumps(stdin))
        except (TypeError, ValueError) as exc:
            raise CNIError(
                ErrorCode.DECODING_FAILURE, f"network config is not JSON: {exc}"
            ) from exc
    if not isinstance(conf, dict):
        raise CNIError(ErrorCode.DECODING_FAILURE, "error unmarshall network config: not an object")
    name = conf.get("name")
    if not name or not isinstance(name, str):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "missing network name")
    if not _NAME_RE.match(name):
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, "invalid characters found in network name", name
        )
    version = conf.get("cniVersion")
    if not version:
        version = "0.1.0"  # libcni's ConfigDecoder default for a missing version
    if not isinstance(version, str):
        raise CNIError(ErrorCode.DECODING_FAILURE, "cniVersion must be a string")
    if version not in SUPPORTED_VERSIONS:
        version_tuple(version)  # a malformed version is a decoding failure
        raise CNIError(
            ErrorCode.INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {json.dumps(version)}, "
            f"plugin supports {json.dumps(list(SUPPORTED_VERSIONS))}",
        )
    return conf


def dispatch(
    plugin: Plugin,
    command: str,
    stdin: bytes | Mapping[str, Any],
    env: Mapping[str, str],
) -> dict[str, Any] | None:
    """Run one CNI command; returns what the executable would print (or None)."""
    if command == "VERSION":
        return version_info()
    if command not in COMMANDS:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {command}")
    _require_env(command, env)
    conf = _decode_config(stdin)
    if command == "CHECK" and version_tuple(conf.get("cniVersion") or "0.1.0") < (0, 4, 0):
        raise CNIError(ErrorCode.INCOMPATIBLE_VERSION, "config version does not allow CHECK")
    args = CmdArgs(
        command=command,
        container_id=env["CNI_CONTAINERID"],
        netns=env.get("CNI_NETNS", ""),
        ifname=env["CNI_IFNAME"],
        args=env.get("CNI_ARGS", ""),
        path=env["CNI_PATH"],
        netconf=conf,
        environ=env,
    )
    if args.netns and command != "CHECK":
        from cni._ns import is_current_netns

        # A container netns equal to ours would make ADD/DEL act on the host.
        if is_current_netns(args.netns):
            raise CNIError(
                ErrorCode.INVALID_NETNS,
                "plugin's netns and netns from CNI_NETNS should not be the same",
            )
    try:
        if command == "ADD":
            return plugin.add(args).to_json(args.cni_version)
        if command == "DEL":
            plugin.delete(args)
        else:
            plugin.check(args)
        return None
    except CNIError:
        raise
    except Exception as exc:
        # Like the reference skel: a plain error becomes ErrInternal (999).
        raise CNIError(ErrorCode.INTERNAL, str(exc) or type(exc).__name__) from exc


def invoke(
    plugin_type: str,
    command: str,
    netconf: Mapping[str, Any] | bytes,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """In-process equivalent of exec'ing the plugin binary `plugin_type`.

    `env` carries CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and
    CNI_PATH (CNI_COMMAND is `command`). Returns the result dict for ADD, the
    version info for VERSION and None for DEL/CHECK; raises CNIError carrying
    the same code/msg/details the executable would print. Blocking: call it
    from a worker thread, never from a thread running an asyncio loop.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["CNI_COMMAND"] = command
    return dispatch(load_plugin(plugin_type), command, netconf, full_env)


def is_builtin(plugin_type: str) -> bool:
    return plugin_type in PLUGIN_MODULES


def _print_json(obj: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, indent=4) + "\n")
    sys.stdout.flush()


def _error_version(stdin: bytes) -> str:
    try:
        version = json.loads(stdin).get("cniVersion")
    except Exception:
        return CURRENT_VERSION
    return (
        version if isinstance(version, str) and version in SUPPORTED_VERSIONS else CURRENT_VERSION
    )


def main_for(plugin_type: str) -> NoReturn:
    """Entry point of the executables (console scripts)."""
    env = dict(os.environ)
    command = env.get("CNI_COMMAND", "")
    if not command:
        # Same courtesy as the reference skel when run by hand.
        sys.stderr.write(
            f"{plugin_type}: criruntime CNI plugin\n"
            f"CNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}\n"
        )
        sys.exit(0)
    stdin = b"" if command == "VERSION" else sys.stdin.buffer.read()
    try:
        out = dispatch(load_plugin(plugin_type), command, stdin, env)
    except CNIError as exc:
        _print_json(exc.to_json(_error_version(stdin)))
        sys.exit(1)
    except Exception as exc:  # never die with a traceback instead of CNI JSON
        _print_json(CNIError(ErrorCode.INTERNAL, str(exc)).to_json(_error_version(stdin)))
        sys.exit(1)
    if out is not None:
        _print_json(out)
    sys.exit(0)

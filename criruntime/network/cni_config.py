"""Finds the CNI network config kubelet's NetworkReady condition depends on.

Like libcni/ocicni: files ending .conf, .conflist or .json in conf_dir, in lexical order; the
first one that parses and whose plugins all exist in bin_dirs is the network. A single-plugin
.conf is wrapped as a one-plugin list. Read on every call, so a config dropped in later is picked
up without a restart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

EXTENSIONS = (".conf", ".conflist", ".json")


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    path: str
    raw: dict[str, Any] = field(repr=False)


class NoNetworkConfig(Exception):
    """No usable network config; the message says what was looked at and why each was skipped."""


def find_plugin(plugin_type: str, bin_dirs: list[str]) -> str | None:
    for d in bin_dirs:
        candidate = os.path.join(d, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def parse(path: str) -> NetworkConfigList:
    with open(path, "rb") as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if "plugins" not in raw:
        if not raw.get("type"):
            raise ValueError("neither a plugin list nor a single plugin with a type")
        raw = {
            "cniVersion": raw.get("cniVersion", ""),
            "name": raw.get("name", ""),
            "plugins": [raw],
        }
    plugins = raw["plugins"]
    if not isinstance(plugins, list) or not plugins:
        raise ValueError("'plugins' must be a non-empty list")
    if not raw.get("name"):
        raise ValueError("missing 'name'")
    for p in plugins:
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise ValueError("every plugin needs a 'type'")
    return NetworkConfigList(
        name=str(raw["name"]),
        cni_version=str(raw.get("cniVersion", "")),
        plugins=plugins,
        path=path,
        raw=raw,
    )


def load_default(conf_dir: str, bin_dirs: list[str]) -> NetworkConfigList:
    """The network pods get, or NoNetworkConfig explaining why there is none."""
    try:
        names = sorted(n for n in os.listdir(conf_dir) if n.endswith(EXTENSIONS))
    except FileNotFoundError:
        names = []
    skipped: list[str] = []
    for name in names:
        path = os.path.join(conf_dir, name)
        try:
            conf = parse(path)
        except (OSError, ValueError) as e:
            skipped.append(f"{name}: {e}")
            continue
        missing = [p["type"] for p in conf.plugins if find_plugin(p["type"], bin_dirs) is None]
        if missing:
            skipped.append(
                f"{name}: plugin(s) {', '.join(missing)} not found in {', '.join(bin_dirs)}"
            )
            continue
        return conf
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise NoNetworkConfig(
        f"cni config uninitialized: no valid network config in {conf_dir}{detail}"
    )

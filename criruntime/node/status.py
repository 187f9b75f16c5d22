"""Status: the RuntimeReady / NetworkReady conditions kubelet gates pods on, and handlers."""

from __future__ import annotations

import json
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.host import HostCgroups
from criruntime.config import Config
from criruntime.network import cni_config
from criruntime.node.runtime_config import POD_CIDR_KEY
from criruntime.oci import features
from criruntime.store.settings import SettingsStore


def _runtime_condition(config: Config) -> api.RuntimeCondition:
    default = config.runtimes[config.default_runtime]
    if features.probe(default.path).path is None:
        return api.RuntimeCondition(
            type="RuntimeReady",
            status=False,
            reason="RuntimeBinaryNotFound",
            message=f"default runtime {config.default_runtime!r}: {default.path!r} is not in PATH",
        )
    return api.RuntimeCondition(type="RuntimeReady", status=True)


def _network_condition(config: Config) -> tuple[api.RuntimeCondition, str]:
    try:
        network = cni_config.load_default(config.cni.conf_dir, config.cni.bin_dirs)
    except cni_config.NoNetworkConfig as e:
        condition = api.RuntimeCondition(
            type="NetworkReady", status=False, reason="NetworkPluginNotReady", message=str(e)
        )
        return condition, json.dumps({"error": str(e)})
    summary = {"name": network.name, "path": network.path, "cniVersion": network.cni_version}
    return api.RuntimeCondition(type="NetworkReady", status=True), json.dumps(summary)


def _handlers(config: Config, user_namespaces: bool) -> list[api.RuntimeHandler]:
    # The empty name is the default handler, as kubelet asks for it when a pod names none.
    names = ["", *sorted(config.runtimes)]
    handlers = []
    for name in names:
        probed = features.probe(config.runtimes[name or config.default_runtime].path)
        handlers.append(
            api.RuntimeHandler(
                name=name,
                features=api.RuntimeHandlerFeatures(
                    recursive_read_only_mounts=probed.recursive_read_only_mounts,
                    # Any runtime joins the pod's user namespace by path; the idmapped mounts are
                    # the daemon's, so the host's start-up probe decides.
                    user_namespaces=user_namespaces and probed.path is not None,
                ),
            )
        )
    return handlers


def status(
    request: api.StatusRequest,
    config: Config,
    settings: SettingsStore,
    cgroups: HostCgroups,
    runtimes: dict[str, Any] | None = None,
    user_namespaces: bool = False,
    streaming: dict[str, object] | None = None,
) -> api.StatusResponse:
    network, cni_info = _network_condition(config)
    response = api.StatusResponse(
        status=api.RuntimeStatus(conditions=[_runtime_condition(config), network]),
        runtime_handlers=_handlers(config, user_namespaces),
        features=api.RuntimeFeatures(supplemental_groups_policy=True),
    )
    if request.verbose:
        # Values are JSON documents, which crictl info decodes and pretty-prints.
        response.info["config"] = json.dumps(config.to_dict())
        response.info["cniconfig"] = cni_info
        response.info["podCIDR"] = json.dumps(settings.get(POD_CIDR_KEY))
        response.info["cgroups"] = json.dumps(cgroups.describe())
        if runtimes is not None:  # which handler is the default and why, where each one runs
            response.info["runtimes"] = json.dumps(runtimes)
        response.info["streaming"] = json.dumps(streaming or {})
    return response

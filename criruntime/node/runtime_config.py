"""RuntimeConfig and UpdateRuntimeConfig: the cgroup driver kubelet must match, the pod CIDR."""

from __future__ import annotations

import ipaddress

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.config import Config
from criruntime.errors import InvalidArgument
from criruntime.store.settings import SettingsStore

POD_CIDR_KEY = "pod_cidr"

_DRIVERS = {"cgroupfs": api.CgroupDriver.CGROUPFS, "systemd": api.CgroupDriver.SYSTEMD}


def runtime_config(config: Config) -> api.RuntimeConfigResponse:
    return api.RuntimeConfigResponse(
        linux=api.LinuxRuntimeConfiguration(cgroup_driver=_DRIVERS[config.cgroup_driver])
    )


def parse_pod_cidrs(value: str) -> list[str]:
    """kubelet sends one CIDR, or two comma-separated for dual-stack (one per family)."""
    cidrs: list[str] = []
    for part in value.split(","):
        try:
            cidrs.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError:
            raise InvalidArgument(
                f"pod CIDR {part.strip()!r} is not a valid CIDR (e.g. 10.88.0.0/16)"
            ) from None
    if len(cidrs) > 2 or len({ipaddress.ip_network(c).version for c in cidrs}) != len(cidrs):
        raise InvalidArgument(
            f"pod CIDR {value!r}: give one CIDR, or one IPv4 and one IPv6 for dual-stack"
        )
    return cidrs


def update_runtime_config(
    request: api.UpdateRuntimeConfigRequest, settings: SettingsStore
) -> api.UpdateRuntimeConfigResponse:
    pod_cidr = request.runtime_config.network_config.pod_cidr
    # An empty CIDR means "no change": kubelet sends the whole struct each time.
    if pod_cidr:
        settings.set(POD_CIDR_KEY, ",".join(parse_pod_cidrs(pod_cidr)))
    return api.UpdateRuntimeConfigResponse()

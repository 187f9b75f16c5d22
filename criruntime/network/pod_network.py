"""CRI pod → CNI: which network, which CNI_ARGS and capability args, and the calls.

The network is re-read from conf_dir on every setup (a new conflist is picked up without a
restart); teardown prefers the config cached at setup, so a pod is always torn down with the
network it was set up with.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from typing import Any

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.config import CniConfig
from criruntime.errors import FailedPrecondition, InvalidArgument, quote
from criruntime.network import cni_config
from criruntime.network.cni_executor import CniExecutor, InProcessRunner, RuntimeConf
from criruntime.node.runtime_config import POD_CIDR_KEY
from criruntime.observability import metrics
from criruntime.store.settings import SettingsStore

log = logging.getLogger("criruntime.network")

IFNAME = "eth0"
INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
MAX_BURST = 2**32 - 1  # containerd's burst for annotation-driven limits (math.MaxUint32)

_QUANTITY = re.compile(r"^([0-9]{1,20}(?:\.[0-9]{1,20})?)([a-zA-Z]*)$")
# kubelet's bounds for the bandwidth annotations (1k .. 1P bits/s).
MIN_BANDWIDTH, MAX_BANDWIDTH = 10**3, 10**15
_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}  # fmt: skip


def parse_quantity(value: str) -> int:
    """A Kubernetes resource quantity ("10M", "1Gi") in base units."""
    m = _QUANTITY.match(value.strip())
    if not m or m.group(2) not in _SUFFIX:
        raise InvalidArgument(f"bandwidth {quote(value)} is not a valid quantity (e.g. 10M)")
    amount = int(Fraction(m.group(1)) * _SUFFIX[m.group(2)])  # exact: no float overflow
    if not MIN_BANDWIDTH <= amount <= MAX_BANDWIDTH:
        raise InvalidArgument(f"bandwidth {quote(value)} is not between 1k and 1P")
    return amount


def capability_args(config: api.PodSandboxConfig, pod_cidrs: list[str]) -> dict[str, Any]:
    caps: dict[str, Any] = {}
    ports = [
        {
            "hostPort": pm.host_port,
            "containerPort": pm.container_port,
            "protocol": api.Protocol.Name(pm.protocol).lower(),
            **({"hostIP": pm.host_ip} if pm.host_ip else {}),
        }
        for pm in config.port_mappings
        if pm.host_port > 0
    ]
    # Passed even when empty: portmap's DEL then knows there is nothing
    # of this pod's to look for (no iptables-save on every pod's stop).
    caps["portMappings"] = ports
    bandwidth: dict[str, int] = {}
    ingress = config.annotations.get(INGRESS_ANNOTATION)
    egress = config.annotations.get(EGRESS_ANNOTATION)
    if ingress:
        bandwidth |= {"ingressRate": parse_quantity(ingress), "ingressBurst": MAX_BURST}
    if egress:
        bandwidth |= {"egressRate": parse_quantity(egress), "egressBurst": MAX_BURST}
    if bandwidth:
        caps["bandwidth"] = bandwidth
    if pod_cidrs:
        caps["ipRanges"] = [[{"subnet": cidr}] for cidr in pod_cidrs]
    return caps


def cni_args(sandbox_id: str, config: api.PodSandboxConfig) -> list[tuple[str, str]]:
    md = config.metadata
    return [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", md.namespace),
        ("K8S_POD_NAME", md.name),
        ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
        ("K8S_POD_UID", md.uid),
    ]


class PodNetwork:
    def __init__(
        self,
        cni: CniConfig,
        cache_dir: str,
        settings: SettingsStore,
        *,
        plugin_timeout: float = 60.0,
        in_process: InProcessRunner | None = None,
    ) -> None:
        self._cni = cni
        self._settings = settings
        self.executor = CniExecutor(
            cni.bin_dirs, cache_dir, plugin_timeout=plugin_timeout, in_process=in_process
        )

    def network(self) -> cni_config.NetworkConfigList:
        try:
            return cni_config.load_default(self._cni.conf_dir, self._cni.bin_dirs)
        except cni_config.NoNetworkConfig as e:
            raise FailedPrecondition(str(e)) from None

    def _pod_cidrs(self) -> list[str]:
        value = self._settings.get(POD_CIDR_KEY)
        return [c for c in (value or "").split(",") if c]

    def runtime_conf(
        self, sandbox_id: str, netns: str, config: api.PodSandboxConfig
    ) -> RuntimeConf:
        return RuntimeConf(
            container_id=sandbox_id,
            netns=netns,
            ifname=IFNAME,
            args=cni_args(sandbox_id, config),
            capability_args=capability_args(config, self._pod_cidrs()),
        )

    @metrics.timed("cni_add")
    async def setup(
        self,
        sandbox_id: str,
        netns: str,
        config: api.PodSandboxConfig,
        net: cni_config.NetworkConfigList | None = None,
    ) -> dict[str, Any]:
        """ADD on `net` (default: the current network); returns the final CNI result. On
        failure the caller runs teardown(): DEL undoes whatever part of the chain succeeded."""
        net = net or self.network()
        return await self.executor.add(net, self.runtime_conf(sandbox_id, netns, config))

    async def check(self, sandbox_id: str, netns: str, config: api.PodSandboxConfig) -> None:
        await self.executor.check(self.network(), self.runtime_conf(sandbox_id, netns, config))

    @metrics.timed("cni_del")
    async def teardown(
        self, sandbox_id: str, netns: str, config: api.PodSandboxConfig, network_name: str
    ) -> None:
        """DEL, with the config cached at ADD when there is one, else the current network."""
        rt = self.runtime_conf(sandbox_id, netns, config)
        cached = self.executor.cached(network_name, rt)
        if cached is not None:
            # The executor swaps in the cached config; the list passed only names the network.
            placeholder = cni_config.NetworkConfigList(
                name=network_name, cni_version="", plugins=[], path="", raw={}
            )
            await self.executor.delete(placeholder, rt)
            return
        try:
            net = self.network()
        except FailedPrecondition:
            log.warning(
                "pod %s: no cached CNI result and no network config; nothing to DEL", sandbox_id
            )
            return
        if net.name != network_name:
            log.warning(
                "pod %s: network %r is gone (now %r) and nothing is cached; skipping DEL",
                sandbox_id, network_name, net.name,
            )  # fmt: skip
            return
        await self.executor.delete(net, rt)

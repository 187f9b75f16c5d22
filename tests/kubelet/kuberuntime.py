"""CRI requests shaped as kubelet v1.32's kuberuntime package builds them (generatePodSandboxConfig,
generateContainerConfig, generateLinuxContainerConfig, the QoS cgroup and OOM-score policies),
so a change that breaks kubelet breaks a test. data/probes-pod.jsonl shows the same shapes as a
real kubelet sent them.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.limits import hugepage_sizes
from tests.kubelet.node import Node

NamespaceMode = api.NamespaceMode
# kubelet's default masked and read-only paths (pkg/securitycontext).
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# pkg/kubelet/qos/policy.go
GUARANTEED_OOM_SCORE_ADJ = -997
BESTEFFORT_OOM_SCORE_ADJ = 1000
MIN_SHARES = 2
QUOTA_PERIOD = 100_000
NODE_MEMORY = 24 << 30  # the node's capacity kubelet divides by for burstable OOM scores


@dataclass
class Limits:
    """A container's resources as the pod spec gives them (millicores, bytes; 0: none)."""

    cpu_request: int = 0
    cpu_limit: int = 0
    memory_request: int = 0
    memory_limit: int = 0


@dataclass
class Pod:
    """One pod as kubelet sees it: its uid, QoS class and the node it runs on."""

    node: Node
    name: str = field(default_factory=lambda: "kpod-" + secrets.token_hex(3))
    namespace: str = "default"
    uid: str = field(default_factory=lambda: secrets.token_hex(16))
    qos: str = "burstable"  # guaranteed | burstable | besteffort
    host_network: bool = False
    share_pid: bool = False
    containers: list[Limits] = field(default_factory=list)

    @property
    def cgroup_parent(self) -> str:
        """pkg/kubelet/cm: Guaranteed pods sit directly under kubepods."""
        qos = "" if self.qos == "guaranteed" else f"/{self.qos}"
        return f"{self.node.cgroup_root}{qos}/pod{self.uid}"

    @property
    def labels(self) -> dict[str, str]:
        return {
            "io.kubernetes.pod.uid": self.uid,
            "io.kubernetes.pod.name": self.name,
            "io.kubernetes.pod.namespace": self.namespace,
        }

    def sandbox_config(self, attempt: int = 0) -> api.PodSandboxConfig:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(
                name=self.name, uid=self.uid, namespace=self.namespace, attempt=attempt
            ),
            log_directory=os.path.join(
                self.node.pod_log_root, f"{self.namespace}_{self.name}_{self.uid}"
            ),
            labels=self.labels,
            annotations={
                "kubernetes.io/config.source": "file",
                "kubernetes.io/config.hash": self.uid,
            },
        )
        if not self.host_network:  # host-network pods keep the node's hostname and resolv.conf
            config.hostname = self.name
            config.dns_config.servers.append("10.255.255.53")
        linux = config.linux
        linux.cgroup_parent = self.cgroup_parent
        ns = linux.security_context.namespace_options
        ns.pid = NamespaceMode.POD if self.share_pid else NamespaceMode.CONTAINER
        if self.host_network:
            ns.network = NamespaceMode.NODE
        linux.security_context.seccomp.SetInParent()
        linux.overhead.SetInParent()
        total = Limits(
            cpu_limit=sum(c.cpu_limit for c in self.containers),
            memory_limit=sum(c.memory_limit for c in self.containers),
            cpu_request=sum(c.cpu_request or c.cpu_limit for c in self.containers),
        )
        linux.resources.CopyFrom(self._cgroup_resources(total))
        return config

    def _cgroup_resources(self, limits: Limits) -> api.LinuxContainerResources:
        """pkg/kubelet/kuberuntime: milliCPUToShares / milliCPUToQuota."""
        r = api.LinuxContainerResources(cpu_period=QUOTA_PERIOD)
        request = limits.cpu_request or limits.cpu_limit
        r.cpu_shares = max(MIN_SHARES, request * 1024 // 1000) if request else MIN_SHARES
        if limits.cpu_limit:
            r.cpu_quota = limits.cpu_limit * QUOTA_PERIOD // 1000
        if limits.memory_limit:
            r.memory_limit_in_bytes = limits.memory_limit
        return r

    def oom_score_adj(self, limits: Limits) -> int:
        """pkg/kubelet/qos/policy.go GetContainerOOMScoreAdjust."""
        if self.qos == "guaranteed":
            return GUARANTEED_OOM_SCORE_ADJ
        if self.qos == "besteffort":
            return BESTEFFORT_OOM_SCORE_ADJ
        adj = 1000 - (1000 * limits.memory_request) // NODE_MEMORY
        return min(max(adj, 2), 999)

    def container_config(
        self,
        name: str,
        command: list[str],
        limits: Limits | None = None,
        attempt: int = 0,
        security: api.LinuxContainerSecurityContext | None = None,
    ) -> api.ContainerConfig:
        limits = limits or Limits()
        pod_dir = self.node.pod_dir(self.uid)
        spec_hash = hashlib.sha256(f"{self.uid}/{name}".encode()).hexdigest()[:8]
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name, attempt=attempt),
            image=api.ImageSpec(image=self.node.image_id, user_specified_image=self.node.image),
            command=command,
            envs=[
                api.KeyValue(key="KUBERNETES_SERVICE_HOST"),
                api.KeyValue(key="KUBERNETES_SERVICE_PORT"),
            ],
            mounts=[
                api.Mount(container_path="/etc/hosts", host_path=f"{pod_dir}/etc-hosts"),
                api.Mount(
                    container_path="/dev/termination-log",
                    host_path=f"{pod_dir}/containers/{name}/{secrets.token_hex(4)}",
                ),
            ],
            labels={**self.labels, "io.kubernetes.container.name": name},
            annotations={
                "io.kubernetes.container.restartCount": str(attempt),
                "io.kubernetes.container.hash": spec_hash,
                "io.kubernetes.pod.terminationGracePeriod": "30",
                "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
                "io.kubernetes.container.terminationMessagePolicy": "File",
            },
            log_path=f"{name}/{attempt}.log",
        )
        r = config.linux.resources
        r.CopyFrom(self._cgroup_resources(limits))
        r.oom_score_adj = self.oom_score_adj(limits)
        # kubelet asks for every page size the node has, limit 0 unless the pod asks for some.
        r.hugepage_limits.extend(api.HugepageLimit(page_size=s) for s in sorted(hugepage_sizes()))
        if limits.memory_limit:
            r.memory_swap_limit_in_bytes = limits.memory_limit  # cgroup v1: no swap beyond it
        sc = config.linux.security_context
        if security is not None:
            sc.CopyFrom(security)
        ns = sc.namespace_options
        ns.pid = NamespaceMode.POD if self.share_pid else NamespaceMode.CONTAINER
        if self.host_network:
            ns.network = NamespaceMode.NODE
        if not sc.privileged:
            sc.masked_paths.extend(MASKED_PATHS)
            sc.readonly_paths.extend(READONLY_PATHS)
        if not sc.HasField("seccomp"):
            sc.seccomp.profile_type = api.SecurityProfile.ProfileType.Unconfined
        return config


@dataclass
class Kubelet:
    """Drives pods through the daemon in kubelet's order of calls."""

    node: Node
    pods: dict[str, Pod] = field(default_factory=dict)  # sandbox id -> pod
    configs: dict[str, api.PodSandboxConfig] = field(default_factory=dict)

    def run_pod(self, pod: Pod) -> str:
        config = pod.sandbox_config()
        self.node.prepare_pod(pod.uid, pod.cgroup_parent)
        pod_id = str(
            self.node.daemon.runtime.RunPodSandbox(
                api.RunPodSandboxRequest(config=config), timeout=30
            ).pod_sandbox_id
        )
        self.pods[pod_id], self.configs[pod_id] = pod, config
        return pod_id

    def create(self, pod_id: str, config: api.ContainerConfig) -> str:
        self.node.prepare_mounts(config)
        return str(
            self.node.daemon.runtime.CreateContainer(
                api.CreateContainerRequest(
                    pod_sandbox_id=pod_id, config=config, sandbox_config=self.configs[pod_id]
                ),
                timeout=30,
            ).container_id
        )

    def start(self, cid: str) -> None:
        self.node.daemon.runtime.StartContainer(
            api.StartContainerRequest(container_id=cid), timeout=30
        )

    def run(self, pod_id: str, config: api.ContainerConfig) -> str:
        cid = self.create(pod_id, config)
        self.start(cid)
        return cid

    def status(self, cid: str) -> api.ContainerStatus:
        status: api.ContainerStatus = self.node.daemon.runtime.ContainerStatus(
            api.ContainerStatusRequest(container_id=cid), timeout=10
        ).status
        return status

    def pid(self, cid: str) -> int:
        info = self.node.daemon.runtime.ContainerStatus(
            api.ContainerStatusRequest(container_id=cid, verbose=True), timeout=10
        ).info["info"]
        return int(json.loads(info)["pid"])

    def exec(self, cid: str, *cmd: str, timeout: int = 1) -> api.ExecSyncResponse:
        response: api.ExecSyncResponse = self.node.daemon.runtime.ExecSync(
            api.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=timeout), timeout=30
        )
        return response

    def teardown(self, pod_id: str) -> None:
        """kubelet's killPod: stop the pod (its containers first), then remove everything."""
        rt = self.node.daemon.runtime
        rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        for c in rt.ListContainers(
            api.ListContainersRequest(filter=api.ContainerFilter(pod_sandbox_id=pod_id)),
            timeout=10,
        ).containers:
            rt.RemoveContainer(api.RemoveContainerRequest(container_id=c.id), timeout=60)
        rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)

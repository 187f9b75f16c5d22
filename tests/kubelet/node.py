"""A test node as kubelet sees it: the real daemon on the project's own CNI plugins (a bridge the
test made), kubelet's directories (pod dirs with etc-hosts, emptyDirs, termination-log files; pod
log dirs) under the test's temp dir, and kubelet's cgroups (QoS and pod cgroups, which kubelet
makes itself before RunPodSandbox) under a cgroup root of the test's own instead of /kubepods.

Everything is removed at teardown, even when the test fails: pods via RPC, then the network, then
the cgroups kubelet would have removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from dataclasses import dataclass, field

import grpc

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.cgroupfs import Cgroupfs
from tests.conftest import Daemon
from tests.container.daemon_env import force_cleanup
from tests.sandbox.podnet import PodNet, host_snapshot, install_own, remove_all_pods

OWN_PLUGINS = ("criruntime-bridge", "criruntime-host-local", "criruntime-portmap")


@dataclass
class Node:
    daemon: Daemon
    image: str  # the busybox image in the test registry, as kubelet names it in a manifest
    image_id: str = ""  # its ImageStatus id, which kubelet puts in CreateContainer
    net: PodNet = field(init=False)
    # kubelet's cgroup root ("/kubepods" on a real node); unique so a real kubelet is never hit
    cgroup_root: str = field(default_factory=lambda: "/crir-kubepods-" + secrets.token_hex(3))
    cgroupfs: Cgroupfs = field(default_factory=Cgroupfs.detect)

    def __post_init__(self) -> None:
        self.net = PodNet(self.daemon)
        install_own(self.daemon, *OWN_PLUGINS)
        self.net.conflist(
            bridge_type="criruntime-bridge",
            ipam_type="criruntime-host-local",
            portmap=False,
            extra=[{"type": "criruntime-portmap", "capabilities": {"portMappings": True}}],
        )

    @property
    def kubelet_root(self) -> str:  # /var/lib/kubelet
        return os.path.join(self.daemon.base, "kubelet")

    @property
    def pod_log_root(self) -> str:  # /var/log/pods
        return os.path.join(self.daemon.base, "pods")

    def pod_dir(self, uid: str) -> str:
        return os.path.join(self.kubelet_root, "pods", uid)

    def prepare_pod(self, uid: str, cgroup_parent: str) -> None:
        """What kubelet makes before RunPodSandbox: the pod dir, its etc-hosts and the pod
        cgroup in every hierarchy."""
        os.makedirs(self.pod_dir(uid), exist_ok=True)
        with open(os.path.join(self.pod_dir(uid), "etc-hosts"), "w") as f:
            f.write("127.0.0.1\tlocalhost\n")
        self.cgroupfs.create(cgroup_parent)

    def prepare_mounts(self, config: api.ContainerConfig) -> None:
        """What kubelet makes before CreateContainer: emptyDir dirs and termination-log files."""
        for mount in config.mounts:
            if os.path.exists(mount.host_path):
                continue
            if "/volumes/" in mount.host_path:
                os.makedirs(mount.host_path)
            else:
                os.makedirs(os.path.dirname(mount.host_path), exist_ok=True)
                open(mount.host_path, "w").close()

    def leftovers(self) -> dict[str, list[str]]:
        """What pods of this node may leave on the host, scoped to this node (other daemons may
        run beside the test): veths on its bridge, iptables rules naming its subnet or bridge,
        IPAM reservations, CNI results, mounts and namespace files under its dirs, cgroups below
        kubelet's pod cgroups."""
        veths = subprocess.run(
            ["ip", "-o", "link", "show", "master", self.net.bridge], capture_output=True, text=True
        ).stdout.splitlines()
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        snapshot = host_snapshot(self.daemon, self.net)
        pod_cgroups = [
            os.path.join(d, e)
            for top in self.cgroupfs.dirs(self.cgroup_root)
            for d, _, _ in os.walk(top)
            if os.path.basename(d).startswith("pod")
            for e in os.listdir(d)
            if _is_dir(d, e)
        ]
        return {
            "veths": veths,
            "iptables": [
                r for r in rules.splitlines() if str(self.net.subnet) in r or self.net.bridge in r
            ],
            "ipam": snapshot["ipam"],
            "cni_cache": snapshot["cni_cache"],
            "mounts": snapshot["mounts"],
            "netns_files": snapshot["netns_files"],
            "container_cgroups": pod_cgroups,
        }

    def cleanup(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            remove_all_pods(self.daemon)
        force_cleanup(self.daemon)
        self.net.cleanup()
        for top in self.cgroupfs.dirs(self.cgroup_root):
            for d, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def _is_dir(parent: str, name: str) -> bool:
    return os.path.isdir(os.path.join(parent, name))

"""Test helpers for real pods: a private CNI network per test, pod configs, TCP probes, and
host snapshots to prove nothing leaked. Everything made here has a unique name and is removed
at teardown even when the test fails."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.oci import mountns
from tests.conftest import Daemon

REFERENCE_PLUGINS = "/usr/lib/cni"


def used_subnets() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def free_subnet() -> ipaddress.IPv4Network:
    used = used_subnets()
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.{random.randint(160, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 in 10.160.0.0/11")


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


@dataclass
class PodNet:
    """A CNI network private to one test: its own bridge, subnet, IPAM dir and conflist."""

    daemon: Daemon
    name: str = field(default_factory=lambda: "crt" + secrets.token_hex(4))
    subnet: ipaddress.IPv4Network = field(default_factory=free_subnet)

    @property
    def bridge(self) -> str:
        return self.name[:15]

    @property
    def ipam_dir(self) -> str:
        return os.path.join(self.daemon.base, "ipam")

    def link_plugins(self, *names: str) -> None:
        for n in names:
            dst = os.path.join(self.daemon.cni_bin_dir, n)
            if not os.path.exists(dst):
                os.symlink(os.path.join(REFERENCE_PLUGINS, n), dst)

    def conflist(
        self,
        *,
        bridge_type: str = "bridge",
        ipam_type: str = "host-local",
        portmap: bool = True,
        extra: list[dict[str, Any]] | None = None,
        filename: str = "10-test.conflist",
    ) -> dict[str, Any]:
        plugins: list[dict[str, Any]] = [
            {
                "type": bridge_type,
                "bridge": self.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": ipam_type,
                    "ranges": [[{"subnet": str(self.subnet)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.ipam_dir,
                },
            }
        ]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        plugins += extra or []
        conf = {"cniVersion": "1.0.0", "name": self.name, "plugins": plugins}
        with open(os.path.join(self.daemon.cni_conf_dir, filename), "w") as f:
            json.dump(conf, f)
        return conf

    def cleanup(self) -> None:
        remove_all_pods(self.daemon)
        force_cleanup(self.daemon.base)
        if link_exists(self.bridge):
            subprocess.run(["ip", "link", "del", self.bridge], check=False)


# Executables stand-ins: cni_config requires every plugin in bin_dirs (as libcni does), even
# though the daemon runs these types in-process.
_WRAPPER = "#!{python}\nfrom cni._skel import main_for\nmain_for({name!r})\n"


def install_own(daemon: Daemon, *names: str) -> None:
    """The project's own plugins (criruntime-bridge, ...) in the daemon's CNI bin dir."""
    for name in names:
        path = os.path.join(daemon.cni_bin_dir, name)
        with open(path, "w") as f:
            f.write(_WRAPPER.format(python=sys.executable, name=name))
        os.chmod(path, stat.S_IRWXU)


def remove_all_pods(daemon: Daemon) -> None:
    if daemon.channel is None or daemon.proc is None or daemon.proc.poll() is not None:
        return
    with contextlib.suppress(grpc.RpcError):
        for pod in daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items:
            with contextlib.suppress(grpc.RpcError):
                daemon.runtime.RemovePodSandbox(
                    api.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=30
                )


def mounts_under(prefix: str) -> list[str]:
    """Mounts at or below `prefix`, but for a running daemon's state dir itself: the daemon
    keeps it bound onto itself as a shared mount, for crun's mount namespace (it leaves the
    marker criruntime/oci/mountns.py names); whatever is mounted below it counts."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [
        p
        for p in points
        if p.startswith(prefix) and not os.path.exists(os.path.join(p, mountns.BIND_MARKER))
    ]


def force_cleanup(base: str) -> None:
    """Last resort after a failed test: unmount anything left under the daemon's dirs."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(base)]
    for path in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", path], check=False)


def pod_config(name: str | None = None, **kw: Any) -> api.PodSandboxConfig:
    name = name or "pod-" + secrets.token_hex(3)
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="test", uid=secrets.token_hex(8)),
        hostname=kw.pop("hostname", name),
        **kw,
    )
    if not config.linux.security_context.namespace_options.pid:
        config.linux.security_context.namespace_options.pid = api.NamespaceMode.CONTAINER
    return config


def run_pod(daemon: Daemon, config: api.PodSandboxConfig, handler: str = "") -> str:
    return str(
        daemon.runtime.RunPodSandbox(
            api.RunPodSandboxRequest(config=config, runtime_handler=handler), timeout=30
        ).pod_sandbox_id
    )


def status(daemon: Daemon, pod_id: str, verbose: bool = True) -> api.PodSandboxStatusResponse:
    response: api.PodSandboxStatusResponse = daemon.runtime.PodSandboxStatus(
        api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose), timeout=10
    )
    return response


def info(daemon: Daemon, pod_id: str) -> dict[str, Any]:
    return dict(json.loads(status(daemon, pod_id).info["info"]))


def stop_pod(daemon: Daemon, pod_id: str) -> None:
    daemon.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)


def remove_pod(daemon: Daemon, pod_id: str) -> None:
    daemon.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)


# ---- TCP inside pod namespaces ------------------------------------------------------------

_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("ready", flush=True)
while True:
    c, addr = s.accept(); c.sendall(b"hello from pod " + addr[0].encode()); c.close()
"""

_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(c.recv(100).decode())
"""


@contextlib.contextmanager
def tcp_server_in(netns: str, port: int) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns}", sys.executable, "-S", "-c", _SERVER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def tcp_from_host(ip: str, port: int) -> str:
    import socket

    with socket.create_connection((ip, port), timeout=5) as c:
        return c.recv(100).decode()


def tcp_from_netns(netns: str, ip: str, port: int) -> str:
    out = subprocess.run(
        ["nsenter", f"--net={netns}", sys.executable, "-S", "-c", _CLIENT, ip, str(port)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# ---- leak snapshots -------------------------------------------------------------------------


def host_snapshot(daemon: Daemon, net: PodNet | None = None) -> dict[str, Any]:
    def listdir(path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def walk(path: str) -> list[str]:
        return sorted(os.path.join(d, x) for d, dirs, files in os.walk(path) for x in dirs + files)

    iptables = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    cgroups = {
        h: walk(os.path.join("/sys/fs/cgroup", h, "criruntime")) for h in ("memory", "cpu", "pids")
    }
    return {
        "links": listdir("/sys/class/net"),
        "mounts": mounts_under(daemon.base),
        "netns_files": walk(os.path.join(daemon.state, "sandboxes")),
        # host-local keeps last_reserved_ip and a lock file per network; reservations are IPs.
        "ipam": [p for p in (walk(net.ipam_dir) if net else []) if _is_ip(os.path.basename(p))],
        "cni_cache": listdir(os.path.join(daemon.root, "cni", "results")),
        "iptables": sorted(
            line.split(" [")[0] for line in iptables.splitlines() if not line.startswith("#")
        ),
        "cgroups": cgroups,
    }


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)

"""Helpers for the CNI plugin tests: namespaces, plugin runners, TCP probes.

Traffic policy: the probes here only connect to 127.0.0.0/8 or to addresses
that live inside network namespaces the test created (`Traffic.allow`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cni
from cni._ns import run_in_netns

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIR = "/usr/lib/cni"
OUR_TYPES = {
    "criruntime-bridge": "cni.bridge",
    "criruntime-host-local": "cni.host_local",
    "criruntime-portmap": "cni.portmap",
    "criruntime-loopback": "cni.loopback",
}


def rand_suffix(n: int = 6) -> str:
    return secrets.token_hex(n // 2 + 1)[:n]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def make_plugin_bin(bindir: Path) -> str:
    """Executables for our plugins (as the console scripts will be).

    The repo root goes on sys.path so the checkout is what runs, whatever
    the editable install points at.
    """
    bindir.mkdir(parents=True, exist_ok=True)
    for name, module in OUR_TYPES.items():
        path = bindir / name
        path.write_text(
            f"#!{sys.executable}\n"
            f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
            f"from {module} import main\nmain()\n"
        )
        path.chmod(0o755)
    return str(bindir)


class Netns:
    """A named netns made with `ip netns add`, removed by `delete()`."""

    def __init__(self, prefix: str) -> None:
        self.name = f"{prefix}-{rand_suffix(8)}"
        sh("ip", "netns", "add", self.name)
        self.path = f"/var/run/netns/{self.name}"
        sh("ip", "-n", self.name, "link", "set", "lo", "up")

    def call(self, fn: Callable[[], T]) -> T:
        return run_in_netns(self.path, fn)

    def delete(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)


class Node:
    """Where the plugins run: an isolated "node" netns, or the real host.

    In a node netns everything the plugins change (bridge, iptables,
    sysctls) dies with the namespace; on the host the fixture undoes it.
    """

    def __init__(self, netns: Netns | None) -> None:
        self.netns = netns

    @property
    def is_host(self) -> bool:
        return self.netns is None

    def call(self, fn: Callable[[], T]) -> T:
        if self.netns is None:
            return fn()
        return self.netns.call(fn)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.call(lambda: sh(*argv, check=check))

    def iptables_rules(self, version: int = 4, table: str = "nat") -> list[str]:
        binary = "iptables" if version == 4 else "ip6tables"
        return self.run(binary, "-t", table, "-S", check=False).stdout.splitlines()

    def sysctl(self, key: str) -> str:
        return self.call(lambda: Path("/proc/sys", key).read_text().strip())


@dataclass
class PluginResult:
    rc: int
    out: dict[str, Any] | None


class Runner:
    """Runs one plugin either in-process (cni.invoke) or as an executable."""

    def __init__(self, node: Node, cni_path: str) -> None:
        self.node = node
        self.cni_path = cni_path

    def env(
        self, container_id: str, netns: str, ifname: str = "eth0", args: str = ""
    ) -> dict[str, str]:
        return {
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": args,
            "CNI_PATH": self.cni_path,
        }

    def exec(
        self, plugin_type: str, command: str, conf: dict[str, Any] | bytes, env: dict[str, str]
    ) -> PluginResult:
        binary = shutil.which(plugin_type, path=self.cni_path)
        assert binary, f"{plugin_type} not in {self.cni_path}"
        full = {**os.environ, **env, "CNI_COMMAND": command}
        data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        proc = self.node.call(
            lambda: subprocess.run([binary], input=data, env=full, capture_output=True, timeout=60)
        )
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        return PluginResult(proc.returncode, out)

    def invoke(
        self, plugin_type: str, command: str, conf: dict[str, Any], env: dict[str, str]
    ) -> dict[str, Any] | None:
        return self.node.call(lambda: cni.invoke(plugin_type, command, conf, env))

    def call(
        self,
        plugin_type: str,
        command: str,
        conf: dict[str, Any],
        env: dict[str, str],
        in_process: bool = True,
    ) -> dict[str, Any] | None:
        """In-process for our types when asked, else exec; raises CNIError on failure."""
        if in_process and cni.is_builtin(plugin_type):
            return self.invoke(plugin_type, command, conf, env)
        res = self.exec(plugin_type, command, conf, env)
        if res.rc != 0:
            raise cni.CNIError.from_json(res.out, fallback=f"{plugin_type} exit {res.rc}")
        return res.out


@dataclass
class Attachment:
    """One conflist applied to one pod (what libcni's AddNetworkList does)."""

    runner: Runner
    conflist: dict[str, Any]
    container_id: str
    netns: str
    ifname: str = "eth0"
    runtime: dict[str, Any] = field(default_factory=dict)
    in_process: bool = True
    result: dict[str, Any] | None = None

    def _conf(self, plugin: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
        conf = {**plugin, "name": self.conflist["name"], "cniVersion": self.conflist["cniVersion"]}
        caps = {k: v for k, v in (plugin.get("capabilities") or {}).items() if v}
        rc = {k: self.runtime[k] for k in caps if k in self.runtime}
        if rc:
            conf["runtimeConfig"] = rc
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def _env(self) -> dict[str, str]:
        return self.runner.env(self.container_id, self.netns, self.ifname)

    def add(self) -> dict[str, Any]:
        prev: dict[str, Any] | None = None
        for plugin in self.conflist["plugins"]:
            prev = self.runner.call(
                plugin["type"], "ADD", self._conf(plugin, prev), self._env(), self.in_process
            )
        assert prev is not None
        self.result = prev
        return prev

    def check(self, skip: tuple[str, ...] = ()) -> None:
        for plugin in self.conflist["plugins"]:
            if plugin["type"] in skip:
                continue
            self.runner.call(
                plugin["type"],
                "CHECK",
                self._conf(plugin, self.result),
                self._env(),
                self.in_process,
            )

    def delete(self) -> None:
        for plugin in reversed(self.conflist["plugins"]):
            self.runner.call(
                plugin["type"], "DEL", self._conf(plugin, self.result), self._env(), self.in_process
            )

    def ip(self, version: int = 4) -> str:
        assert self.result is not None
        for ip in self.result.get("ips", []):
            iface = ipaddress.ip_interface(ip["address"])
            if iface.version == version:
                return str(iface.ip)
        raise AssertionError(f"no IPv{version} address in {self.result}")


# -- TCP probes ------------------------------------------------------------------

_SERVER = textwrap.dedent(
    """
    import socket, sys
    token, port = sys.argv[1].encode(), int(sys.argv[2])
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(16)
    s.settimeout(120)  # bounded: exits by itself if nobody talks to it
    print("READY", flush=True)
    for _ in range(200):
        try:
            c, peer = s.accept()
        except socket.timeout:
            break
        with c:
            c.settimeout(5)
            data = c.recv(64)
            c.sendall(token + b" " + data + b" from " + peer[0].encode())
    """
)


class TcpServer:
    """A tiny echo server inside a netns, started with `ip netns exec`."""

    def __init__(self, netns: Netns, token: str, port: int) -> None:
        self.token = token
        self.port = port
        # `ip netns exec` execs python: the PID we hold is the server's.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns.name, sys.executable, "-c", _SERVER, token, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"server did not start: {line!r} {err!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Traffic:
    """Guards the traffic policy: only loopback and test-made netns addresses."""

    def __init__(self) -> None:
        self.allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ]

    def allow(self, net: str) -> None:
        self.allowed.append(ipaddress.ip_network(net, strict=False))

    def check(self, host: str) -> None:
        addr = ipaddress.ip_address(host)
        assert any(addr in n for n in self.allowed), f"test may not send traffic to {host}"


def tcp_ask(
    traffic: Traffic, host: str, port: int, payload: str = "ping", within: float = 8
) -> str:
    """Connect, send, read the reply; retried briefly while neighbours settle."""
    traffic.check(host)
    last: Exception | None = None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.sendall(payload.encode())
                return s.recv(256).decode()
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise AssertionError(f"no TCP answer from {host}:{port}: {last}")


def free_port() -> int:
    return random.randint(20000, 60000)


def random_v4_subnet(taken: list[str] | None = None) -> str:
    """A random 10.x.y.0/24 that overlaps nothing in `taken` (routes in use)."""
    used = [ipaddress.ip_network(t, strict=False) for t in (taken or [])]
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.version == 4 and u.prefixlen > 0):
            return str(net)
    raise RuntimeError("no free 10.x subnet")


def random_v6_subnet() -> str:
    return f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::/64"


def host_routes() -> list[str]:
    out = sh("ip", "-o", "route", "show", "table", "all", check=False).stdout
    dsts = []
    for line in out.splitlines():
        first = line.split()[0]
        if first in ("local", "broadcast", "unreachable", "prohibit", "blackhole"):
            first = line.split()[1]
        if first != "default" and "." in first:
            dsts.append(first if "/" in first else first + "/32")
    return dsts


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def iter_reservations(data_dir: Path, network: str) -> Iterator[tuple[str, bytes]]:
    for p in sorted((data_dir / network).iterdir()):
        yield p.name, p.read_bytes()

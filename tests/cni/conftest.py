"""Fixtures for the CNI plugin tests.

Everything is real (netns, bridges, veths, iptables) and uniquely named;
finalizers remove it even when a test fails. Most tests run the plugins in a
throw-away "node" netns so the host is never touched; the `anynode` tests
also run on the real host netns, with explicit cleanup.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cni.helpers import (
    REFERENCE_DIR,
    Netns,
    Node,
    Runner,
    TcpServer,
    Traffic,
    host_routes,
    make_plugin_bin,
    rand_suffix,
    random_v4_subnet,
    random_v6_subnet,
    sh,
)

SHARED_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


@pytest.fixture(scope="session")
def cni_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    bindir = make_plugin_bin(tmp_path_factory.mktemp("cnibin"))
    return f"{bindir}:{REFERENCE_DIR}"


@pytest.fixture
def reference_plugins() -> str:
    return REFERENCE_DIR


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()


@pytest.fixture
def netns_factory() -> Iterator[Callable[[str], Netns]]:
    made: list[Netns] = []

    def make(prefix: str = "cnit") -> Netns:
        ns = Netns(prefix)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        ns.delete()


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Callable[[], Netns]:
    return lambda: netns_factory("cnit-pod")


@pytest.fixture
def servers() -> Iterator[Callable[[Netns, str, int], TcpServer]]:
    started: list[TcpServer] = []

    def start(netns: Netns, token: str, port: int) -> TcpServer:
        srv = TcpServer(netns, token, port)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


class HostCleanup:
    """Undo what plugins did to the real host netns, touching only our names.

    Host-wide sysctls are not restored (others may rely on them meanwhile), so
    host-netns tests avoid isGateway, which would turn on ip_forward.
    """

    def __init__(self) -> None:
        self.networks: list[str] = []
        self.bridges: list[str] = []
        self.shared_before = {v: {c for c in SHARED_CHAINS if _chain_exists(v, c)} for v in (4, 6)}

    def run(self) -> None:
        for br in self.bridges:
            sh("ip", "link", "del", br, check=False)
        for v in (4, 6):
            self._iptables(v)

    def _iptables(self, version: int) -> None:
        binary = "iptables" if version == 4 else "ip6tables"
        lines = sh(binary, "-t", "nat", "-S", check=False).stdout.splitlines()
        chains: set[str] = set()
        for line in lines:
            if not any(f'name: \\"{n}\\"' in line for n in self.networks):
                continue
            words = shlex.split(line)
            if words[0] == "-A":
                sh(binary, "-t", "nat", "-D", *words[1:], check=False)
                if "-j" in words:
                    chains.add(words[words.index("-j") + 1])
                if words[1].startswith("CNI-") and words[1] not in SHARED_CHAINS:
                    chains.add(words[1])
        for chain in chains - set(SHARED_CHAINS):
            if chain.startswith("CNI-"):
                sh(binary, "-t", "nat", "-F", chain, check=False)
                sh(binary, "-t", "nat", "-X", chain, check=False)
        # Shared portmap chains we created, once nothing uses them any more.
        dnat = sh(binary, "-t", "nat", "-S", "CNI-HOSTPORT-DNAT", check=False).stdout
        if "-j CNI-DN-" in dnat:
            return
        for chain in SHARED_CHAINS:
            if chain in self.shared_before[version] or not _chain_exists(version, chain):
                continue
            for line in sh(binary, "-t", "nat", "-S", check=False).stdout.splitlines():
                words = shlex.split(line)
                if words[0] == "-A" and words[-2:] == ["-j", chain]:
                    sh(binary, "-t", "nat", "-D", *words[1:], check=False)
            sh(binary, "-t", "nat", "-F", chain, check=False)
            sh(binary, "-t", "nat", "-X", chain, check=False)


def _chain_exists(version: int, chain: str) -> bool:
    binary = "iptables" if version == 4 else "ip6tables"
    return sh(binary, "-t", "nat", "-S", chain, check=False).returncode == 0


@pytest.fixture
def node(netns_factory: Callable[[str], Netns]) -> Node:
    """An isolated node: a fresh netns where the plugins do their work."""
    return Node(netns_factory("cnit-node"))


@pytest.fixture
def host_cleanup() -> Iterator[HostCleanup]:
    cleanup = HostCleanup()
    yield cleanup
    cleanup.run()


@pytest.fixture(params=["nodens", "hostns"])
def anynode(
    request: pytest.FixtureRequest, netns_factory: Callable[[str], Netns]
) -> Iterator[tuple[Node, HostCleanup | None]]:
    if request.param == "nodens":
        yield Node(netns_factory("cnit-node")), None
        return
    cleanup = HostCleanup()
    try:
        yield Node(None), cleanup
    finally:
        cleanup.run()


@pytest.fixture
def runner_for(cni_path: str) -> Callable[[Node], Runner]:
    return lambda n: Runner(n, cni_path)


class Net:
    """A test network: unique name, bridge, subnets and an IPAM data dir."""

    def __init__(self, tmp_path: Path, traffic: Traffic, on_host: bool) -> None:
        sfx = rand_suffix(6)
        self.name = f"cnit-{sfx}"
        self.bridge = f"cnbr{sfx}"
        self.v4 = random_v4_subnet(host_routes() if on_host else None)
        self.v6 = random_v6_subnet()
        self.data_dir = tmp_path / f"ipam-{sfx}"
        traffic.allow(self.v4)
        traffic.allow(self.v6)

    def ipam(self, ipam_type: str = "criruntime-host-local", v6: bool = True) -> dict[str, Any]:
        ranges: list[list[dict[str, str]]] = [[{"subnet": self.v4}]]
        if v6:
            ranges.append([{"subnet": self.v6}])
        return {"type": ipam_type, "dataDir": str(self.data_dir), "ranges": ranges}

    def bridge_conf(
        self,
        bridge_type: str = "criruntime-bridge",
        ipam_type: str = "criruntime-host-local",
        v6: bool = True,
        **extra: Any,
    ) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "type": bridge_type,
            "bridge": self.bridge,
            "isGateway": True,
            "ipam": self.ipam(ipam_type, v6),
        }
        conf.update(extra)
        return conf

    def conflist(self, *plugins: dict[str, Any], version: str = "1.0.0") -> dict[str, Any]:
        return {"cniVersion": version, "name": self.name, "plugins": list(plugins)}


@pytest.fixture
def net_factory(tmp_path: Path, traffic: Traffic) -> Callable[[Node, HostCleanup | None], Net]:
    def make(n: Node, cleanup: HostCleanup | None = None) -> Net:
        net = Net(tmp_path, traffic, n.is_host)
        if cleanup is not None:
            cleanup.networks.append(net.name)
            cleanup.bridges.append(net.bridge)
        return net

    return make


@pytest.fixture
def net(node: Node, net_factory: Callable[[Node, HostCleanup | None], Net]) -> Net:
    """A network (bridge, subnets, IPAM dir) on the isolated `node`."""
    return net_factory(node, None)


@pytest.fixture
def runner(node: Node, runner_for: Callable[[Node], Runner]) -> Runner:
    """Runs plugins on the isolated `node`."""
    return runner_for(node)


@pytest.fixture
def uplink(
    node: Node, netns_factory: Callable[[str], Netns], traffic: Traffic
) -> Iterator[tuple[Netns, str, str]]:
    """Another "host": a netns wired to the node by a veth, on its own subnet."""
    ext = netns_factory("cnit-ext")
    v4 = ipaddress.ip_network(random_v4_subnet())
    v6 = ipaddress.ip_network(random_v6_subnet())
    traffic.allow(str(v4))
    traffic.allow(str(v6))
    assert node.netns is not None
    sh(
        "ip",
        "-n",
        node.netns.name,
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "up1",
        "netns",
        ext.name,
    )
    for ns, ifname, idx in ((node.netns.name, "up0", 1), (ext.name, "up1", 2)):
        sh("ip", "-n", ns, "addr", "add", f"{v4[idx]}/24", "dev", ifname)
        sh("ip", "-n", ns, "addr", "add", f"{v6[idx]}/64", "dev", ifname, "nodad")
        sh("ip", "-n", ns, "link", "set", ifname, "up")
    yield ext, str(v4[1]), str(v6[1])

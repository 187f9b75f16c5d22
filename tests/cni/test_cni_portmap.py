"""portmap: host ports reach pods from 127.0.0.1, other hosts and other pods."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

import cni
from cni import _iptables
from tests.cni.conftest import HostCleanup, Net
from tests.cni.helpers import (
    Attachment,
    Netns,
    Node,
    Runner,
    TcpServer,
    Traffic,
    free_port,
    random_v4_subnet,
    tcp_ask,
)

NetFactory = Callable[[Node, HostCleanup | None], Net]
PORTMAP = {"type": "criruntime-portmap", "capabilities": {"portMappings": True}}
POD_PORT = 8080


def mapping(host_port: int, proto: str = "tcp", host_ip: str = "") -> dict[str, Any]:
    m: dict[str, Any] = {"hostPort": host_port, "containerPort": POD_PORT, "protocol": proto}
    if host_ip:
        m["hostIP"] = host_ip
    return m


def portmap_conflist(
    net: Net, node: Node, portmap: dict[str, Any] | None = None, **bridge: Any
) -> dict[str, Any]:
    # On the real host: no isGateway (the host's ip_forward stays as it is);
    # the test gives the bridge its address. IPv4 only there.
    on_host = node.is_host
    conf = net.bridge_conf(v6=not on_host, isGateway=not on_host, **bridge)
    return net.conflist(conf, portmap or PORTMAP)


def give_bridge_address(node: Node, net: Net) -> None:
    """On the host (no isGateway) the test makes the bridge and its address
    itself, before ADD, as an operator would; the plugin reuses it."""
    if node.is_host:
        gw = ipaddress.ip_network(net.v4)[1]
        node.run("ip", "link", "add", net.bridge, "type", "bridge")
        node.run("ip", "addr", "add", f"{gw}/24", "dev", net.bridge)
        node.run("ip", "link", "set", net.bridge, "up")


def dnat_chains(node: Node, version: int = 4) -> list[str]:
    return [r.split()[1] for r in node.iptables_rules(version) if r.startswith("-N CNI-DN-")]


def test_localhost_to_pod(
    anynode: tuple[Node, HostCleanup | None],
    pod: Callable[[], Netns],
    runner_for: Callable[[Node], Runner],
    net_factory: NetFactory,
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
) -> None:
    node, cleanup = anynode
    net = net_factory(node, cleanup)
    runner = runner_for(node)
    p = pod()
    host_port = free_port()
    att = Attachment(
        runner,
        portmap_conflist(net, node),
        "pm-a",
        p.path,
        runtime={"portMappings": [mapping(host_port)]},
    )
    give_bridge_address(node, net)
    res = att.add()
    assert res["ips"][0]["address"].startswith(att.ip(4))  # portmap passes the result on
    servers(p, "A", POD_PORT)
    gw = str(ipaddress.ip_network(net.v4)[1])
    reply = node.call(lambda: tcp_ask(traffic, "127.0.0.1", host_port, "lo"))
    # DNAT'ed to the pod and masqueraded to the bridge address on the way.
    assert reply in (f"A lo from ::ffff:{gw}", f"A lo from {gw}")
    assert node.sysctl(f"net/ipv4/conf/{net.bridge}/route_localnet") == "1"

    rules = node.iptables_rules(4)
    chain = next(
        c for c in dnat_chains(node) if any(f"-A {c} " in r and att.ip(4) in r for r in rules)
    )
    assert (
        f"-A {chain} -p tcp -m tcp --dport {host_port} -j DNAT --to-destination "
        f"{att.ip(4)}:{POD_PORT}" in rules
    )
    att.check()
    att.delete()
    assert chain not in dnat_chains(node)
    assert not [r for r in node.iptables_rules(4) if f"-j {chain}" in r]
    att.delete()  # idempotent


def test_port_clash_is_refused_and_first_keeps_working(
    anynode: tuple[Node, HostCleanup | None],
    pod: Callable[[], Netns],
    runner_for: Callable[[Node], Runner],
    net_factory: NetFactory,
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
) -> None:
    node, cleanup = anynode
    net = net_factory(node, cleanup)
    runner = runner_for(node)
    conflist = portmap_conflist(net, node)
    port = free_port()
    a, b = pod(), pod()
    first = Attachment(
        runner, conflist, "clash-a", a.path, runtime={"portMappings": [mapping(port)]}
    )
    give_bridge_address(node, net)
    first.add()
    servers(a, "A", POD_PORT)
    servers(b, "B", POD_PORT)
    assert node.call(lambda: tcp_ask(traffic, "127.0.0.1", port)).startswith("A ")

    for attempt, m in enumerate([mapping(port), mapping(port, host_ip="127.0.0.1")]):
        second = Attachment(
            runner, conflist, f"clash-b{attempt}", b.path, runtime={"portMappings": [m]}
        )
        with pytest.raises(cni.CNIError) as exc_info:
            second.add()
        err = exc_info.value
        assert err.code == 100
        assert f"host port {port}/tcp" in err.msg and "already mapped" in err.msg
        assert 'id: "clash-a"' in err.msg  # names the holder
        second.delete()  # what the runtime does after a failed ADD
        assert node.call(lambda: tcp_ask(traffic, "127.0.0.1", port)).startswith("A ")

    # Another protocol on the same number is no clash.
    udp = Attachment(
        runner, conflist, "clash-udp", b.path, runtime={"portMappings": [mapping(port, "udp")]}
    )
    udp.add()
    udp.delete()
    # Once the first pod is gone the port is free again.
    first.delete()
    again = Attachment(
        runner, conflist, "clash-c", b.path, runtime={"portMappings": [mapping(port)]}
    )
    again.add()
    assert node.call(lambda: tcp_ask(traffic, "127.0.0.1", port)).startswith("B ")
    again.delete()


def test_distinct_host_ips_do_not_clash(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
) -> None:
    conflist = portmap_conflist(net, node)
    port = free_port()
    a, b = pod(), pod()
    att_a = Attachment(
        runner,
        conflist,
        "hip-a",
        a.path,
        runtime={"portMappings": [mapping(port, host_ip="127.0.0.1")]},
    )
    att_b = Attachment(
        runner,
        conflist,
        "hip-b",
        b.path,
        runtime={"portMappings": [mapping(port, host_ip="127.0.0.2")]},
    )
    att_a.add()
    att_b.add()
    servers(a, "A", POD_PORT)
    servers(b, "B", POD_PORT)
    assert node.call(lambda: tcp_ask(traffic, "127.0.0.1", port)).startswith("A ")
    # 127.0.0.2 is local too, but SETMARK only matches -s 127.0.0.1: bind the source.
    assert "-d 127.0.0.2/32" in "\n".join(node.iptables_rules(4))


def test_other_host_and_other_pod_reach_host_port(
    node: Node,
    uplink: tuple[Netns, str, str],
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
) -> None:
    ext, node_v4, node_v6 = uplink
    # isDefaultGateway: replies to the other host leave the pod via the node.
    conflist = portmap_conflist(net, node, isDefaultGateway=True)
    a, b = pod(), pod()
    port = free_port()
    att_a = Attachment(runner, conflist, "ext-a", a.path, runtime={"portMappings": [mapping(port)]})
    att_b = Attachment(runner, conflist, "ext-b", b.path)
    att_a.add()
    att_b.add()
    servers(a, "A", POD_PORT)
    ext_v4 = str(ipaddress.ip_address(node_v4) + 1)
    ext_v6 = str(ipaddress.ip_address(node_v6) + 1)
    # From the other host, to the node's addresses (PREROUTING DNAT); the
    # pod sees the real client address (no masquerade for outside clients).
    assert ext.call(lambda: tcp_ask(traffic, node_v4, port, "x4")) == f"A x4 from ::ffff:{ext_v4}"
    assert ext.call(lambda: tcp_ask(traffic, node_v6, port, "x6")) == f"A x6 from {ext_v6}"
    # Another pod on the same bridge, via a node address: hairpin, masqueraded.
    gw4 = str(ipaddress.ip_network(net.v4)[1])
    reply = b.call(lambda: tcp_ask(traffic, gw4, port, "hp"))
    assert reply == f"A hp from ::ffff:{gw4}"
    att_a.check()
    att_b.delete()
    att_a.delete()
    assert dnat_chains(node, 4) == dnat_chains(node, 6) == []


def test_del_without_runtime_config_and_without_prev_result(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
) -> None:
    p = pod()
    att = Attachment(
        runner,
        portmap_conflist(net, node),
        "nodata",
        p.path,
        runtime={"portMappings": [mapping(free_port())]},
    )
    att.add()
    assert dnat_chains(node)
    env = runner.env("nodata", p.path)
    conf = {"cniVersion": "1.0.0", "name": net.name, "type": "criruntime-portmap"}
    runner.invoke("criruntime-portmap", "DEL", conf, env)
    assert dnat_chains(node) == []
    with pytest.raises(cni.CNIError, match="must be called as chained plugin"):
        runner.invoke("criruntime-portmap", "ADD", conf, env)
    res = runner.exec("criruntime-portmap", "DEL", conf, env)
    assert (res.rc, res.out) == (0, None)


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_explicit_iptables_backends(
    backend: str,
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both iptables backends work (`iptables` may point at either)."""
    monkeypatch.setattr(
        _iptables, "BINARIES", {4: f"iptables-{backend}", 6: f"ip6tables-{backend}"}
    )
    p = pod()
    port = free_port()
    att = Attachment(
        runner,
        net.conflist(net.bridge_conf(ipMasq=True), PORTMAP),
        "be",
        p.path,
        runtime={"portMappings": [mapping(port)]},
    )
    att.add()
    servers(p, "P", POD_PORT)
    assert node.call(lambda: tcp_ask(traffic, "127.0.0.1", port)).startswith("P ")
    rules = node.run(f"iptables-{backend}", "-t", "nat", "-S").stdout
    assert "CNI-HOSTPORT-DNAT" in rules and f"--dport {port}" in rules
    att.check()
    att.delete()
    rules = node.run(f"iptables-{backend}", "-t", "nat", "-S").stdout
    assert "-N CNI-DN-" not in rules and net.name not in rules


def test_route_localnet_is_not_set_on_an_uplink(
    node: Node,
    uplink: tuple[Netns, str, str],
    pod: Callable[[], Netns],
    runner_for: Callable[[Node], Runner],
) -> None:
    """No route to the pod yet (only a default route): the uplink stays untouched."""
    _, node_v4, _ = uplink
    ext_v4 = str(ipaddress.ip_address(node_v4) + 1)
    node.run("ip", "route", "add", "default", "via", ext_v4)
    runner = runner_for(node)
    p = pod()
    pod_ip = ipaddress.ip_network(random_v4_subnet())[5]
    conf = {
        "cniVersion": "1.0.0",
        "name": "rl",
        "type": "criruntime-portmap",
        "runtimeConfig": {"portMappings": [mapping(free_port())]},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": p.path}],
            "ips": [{"address": f"{pod_ip}/24", "interface": 0}],
        },
    }
    env = runner.env("rl1", p.path)
    runner.invoke("criruntime-portmap", "ADD", conf, env)
    assert node.sysctl("net/ipv4/conf/up0/route_localnet") == "0"
    runner.invoke("criruntime-portmap", "DEL", conf, env)
    assert dnat_chains(node) == []


def test_shared_chains_once_and_del_without_mappings_runs_nothing(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pods after the first add only their own chain (the shared rules are seen in the one
    iptables-save and not written twice), and a DEL told there were no port mappings does
    not run iptables at all."""
    pods = [pod() for _ in range(3)]
    atts = [
        Attachment(
            runner,
            portmap_conflist(net, node),
            f"shared-{i}",
            p.path,
            runtime={"portMappings": [mapping(free_port())]},
        )
        for i, p in enumerate(pods)
    ]
    for att in atts:
        att.add()
    rules = node.iptables_rules(4)
    shared = [r for r in rules if r.startswith("-A") and "CNI-DN-" not in r]
    assert len(shared) == len(set(shared)) == 5, shared  # SETMARK, MASQ, 3 jumps
    assert len(dnat_chains(node)) == 3
    att = atts.pop()
    att.delete()
    assert len(dnat_chains(node)) == 2

    ran: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        ran.append(argv)
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    conf = {
        **PORTMAP,
        "name": net.name,
        "cniVersion": "1.0.0",
        "runtimeConfig": {"portMappings": []},
        "prevResult": atts[0].result,
    }
    runner.invoke("criruntime-portmap", "DEL", conf, runner.env("shared-0", pods[0].path))
    assert ran == []
    monkeypatch.undo()
    for att in atts:
        att.delete()
    assert dnat_chains(node) == []

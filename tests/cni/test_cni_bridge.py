"""bridge + host-local + loopback on real namespaces, bridges and veths."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import cni
from cni import _iptables
from cni._ipmasq import masq_chain
from tests.cni.conftest import HostCleanup, Net
from tests.cni.helpers import (
    Attachment,
    Netns,
    Node,
    Runner,
    TcpServer,
    Traffic,
    free_port,
    tcp_ask,
)

LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "criruntime-loopback"}

NetFactory = Callable[[Node, HostCleanup | None], Net]


def links(node: Node, netns: Netns | None = None) -> dict[str, Any]:
    argv = (
        ["ip", "-j", "-d", "link", "show"]
        if netns is None
        else ["ip", "-n", netns.name, "-j", "-d", "link", "show"]
    )
    return {link["ifname"]: link for link in json.loads(node.run(*argv).stdout)}


def addrs(node: Node, ifname: str, netns: Netns | None = None) -> set[str]:
    argv = ["ip", "-j", "addr", "show", "dev", ifname]
    if netns is not None:
        argv[1:1] = ["-n", netns.name]
    out = json.loads(node.run(*argv).stdout)
    return {
        f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"] if a.get("scope") == "global"
    }


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "exec"])
def test_add_check_del_dual_stack(
    in_process: bool,
    node: Node,
    pod: Callable[[], Netns],
    runner_for: Callable[[Node], Runner],
    net: Net,
) -> None:
    runner = runner_for(node)
    p = pod()
    lo = Attachment(
        runner, {**LOOPBACK, "plugins": [LOOPBACK]}, "ctr1", p.path, "lo", in_process=in_process
    )
    lo.add()
    att = Attachment(
        runner,
        net.conflist(net.bridge_conf(isDefaultGateway=True)),
        "ctr1",
        p.path,
        in_process=in_process,
    )
    res = att.add()

    br, veth, eth0 = res["interfaces"]
    assert br["name"] == net.bridge and "sandbox" not in br
    assert veth["name"].startswith("veth") and "sandbox" not in veth
    assert eth0["name"] == "eth0" and eth0["sandbox"] == p.path
    v4net = ipaddress.ip_network(net.v4)
    v6net = ipaddress.ip_network(net.v6)
    assert res["ips"] == [
        {"interface": 2, "address": f"{v4net[2]}/24", "gateway": str(v4net[1])},
        {"interface": 2, "address": f"{v6net[2]}/64", "gateway": str(v6net[1])},
    ]
    assert res["routes"] == [
        {"dst": "0.0.0.0/0", "gw": str(v4net[1])},
        {"dst": "::/0", "gw": str(v6net[1])},
    ]

    # Host side: bridge with both gateways, veth enslaved to it and up.
    host_links = links(node)
    assert host_links[net.bridge]["linkinfo"]["info_kind"] == "bridge"
    assert host_links[net.bridge]["address"] == br["mac"]
    assert host_links[veth["name"]]["master"] == net.bridge
    assert host_links[veth["name"]]["operstate"] == "UP"
    assert addrs(node, net.bridge) == {f"{v4net[1]}/24", f"{v6net[1]}/64"}
    assert node.sysctl("net/ipv4/ip_forward") == "1"  # isGateway (only in the node netns)

    # Pod side: eth0 with both addresses and default routes; lo up.
    pod_links = links(node, p)
    assert pod_links["eth0"]["address"] == eth0["mac"]
    assert "UP" in pod_links["lo"]["flags"]
    assert addrs(node, "eth0", p) == {f"{v4net[2]}/24", f"{v6net[2]}/64"}
    routes4 = node.run("ip", "-n", p.name, "route").stdout
    routes6 = node.run("ip", "-n", p.name, "-6", "route").stdout
    assert f"default via {v4net[1]} dev eth0" in routes4
    assert f"default via {v6net[1]} dev eth0" in routes6

    # Reservations in the reference layout.
    d = net.data_dir / net.name
    assert (d / str(v4net[2])).read_bytes() == b"ctr1\r\neth0"
    assert (d / str(v6net[2])).read_bytes() == b"ctr1\r\neth0"

    att.check()
    lo.check()

    att.delete()
    assert veth["name"] not in links(node)
    assert "eth0" not in links(node, p)
    assert not (d / str(v4net[2])).exists()
    att.delete()  # idempotent
    with pytest.raises(cni.CNIError):
        att.check()
    lo.delete()
    p.delete()
    att.delete()  # the netns itself is gone: still fine
    lo.delete()


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0"])
def test_old_conflist_versions(
    version: str,
    node: Node,
    pod: Callable[[], Netns],
    runner_for: Callable[[Node], Runner],
    net: Net,
) -> None:
    att = Attachment(
        runner_for(node), net.conflist(net.bridge_conf(), version=version), "old1", pod().path
    )
    res = att.add()
    assert res["cniVersion"] == version
    assert [ip["version"] for ip in res["ips"]] == ["4", "6"]
    if version == "0.4.0":
        att.check()
    att.delete()


def test_tcp_host_to_pod_and_pod_to_pod(
    anynode: tuple[Node, HostCleanup | None],
    pod: Callable[[], Netns],
    runner_for: Callable[[Node], Runner],
    net_factory: NetFactory,
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
) -> None:
    node, cleanup = anynode
    net = net_factory(node, cleanup)
    # On the real host: no isGateway (it would switch on the host's ip_forward)
    # and IPv4 only; the test gives the bridge its address itself.
    dual = not node.is_host
    conflist = net.conflist(net.bridge_conf(v6=dual, isGateway=not node.is_host))
    runner = runner_for(node)
    a, b = pod(), pod()
    att_a = Attachment(runner, conflist, "pod-a", a.path)
    att_b = Attachment(runner, conflist, "pod-b", b.path)
    att_a.add()
    att_b.add()
    if node.is_host:
        gw = ipaddress.ip_network(net.v4)[1]
        node.run("ip", "addr", "add", f"{gw}/24", "dev", net.bridge)
    port = free_port()
    servers(a, "A", port)
    servers(b, "B", port)
    versions = (4, 6) if dual else (4,)
    for v in versions:
        ip_a, ip_b = att_a.ip(v), att_b.ip(v)
        # node -> pod (source: the bridge gateway address)
        reply = node.call(lambda: tcp_ask(traffic, ip_a, port, "hello"))  # noqa: B023
        assert reply.startswith("A hello from ")
        # pod B -> pod A over the bridge, and back
        reply = b.call(lambda: tcp_ask(traffic, ip_a, port, "b2a"))  # noqa: B023
        # The server is dual-stack: IPv4 peers show up as ::ffff:a.b.c.d.
        assert reply.startswith("A b2a from ") and reply.endswith(ip_b)
        reply = a.call(lambda: tcp_ask(traffic, ip_b, port, "a2b"))  # noqa: B023
        assert reply.startswith("B a2b from ")
    att_b.delete()
    att_a.delete()
    if node.is_host:
        assert net.name not in "\n".join(node.iptables_rules(4))


def masq_rules(node: Node, net: Net, version: int) -> list[str]:
    subnet = ipaddress.ip_network(net.v4 if version == 4 else net.v6)
    chain = masq_chain(net.name, subnet)
    comment = f'"name: \\"{net.name}\\" subnet: \\"{subnet}\\""'
    multicast = "224.0.0.0/4" if version == 4 else "ff00::/8"
    return [
        f"-A POSTROUTING -s {subnet} -m comment --comment {comment} -j {chain}",
        f"-A {chain} -d {subnet} -m comment --comment {comment} -j ACCEPT",
        f"-A {chain} ! -d {multicast} -m comment --comment {comment} -j MASQUERADE",
    ]


def network_rules(node: Node, net: Net, version: int) -> list[str]:
    return [r for r in node.iptables_rules(version) if net.name in r]


def test_ip_masq_rules_belong_to_the_network(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    uplink: tuple[Netns, str, str],
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
) -> None:
    """One set of rules per subnet, made by the first ADD, kept while a pod is left and
    removed by the last DEL; pod -> outside is masqueraded, pod -> pod is not."""
    ext, node_v4, node_v6 = uplink
    ext_v4 = str(ipaddress.ip_address(node_v4) + 1)  # the uplink's far end
    ext_v6 = str(ipaddress.ip_address(node_v6) + 1)
    conflist = net.conflist(net.bridge_conf(ipMasq=True, isDefaultGateway=True))
    a, b = pod(), pod()
    att_a = Attachment(runner, conflist, "masq-a", a.path)
    att_b = Attachment(runner, conflist, "masq-b", b.path, in_process=False)
    att_a.add()
    att_b.add()
    for version in (4, 6):
        # Nothing per pod: neither container ID appears in a rule.
        assert network_rules(node, net, version) == masq_rules(node, net, version)

    port = free_port()
    servers(ext, "X", port)
    servers(a, "A", port)
    # The outside sees the node's address, not the pod's (which it has no route back to).
    assert b.call(lambda: tcp_ask(traffic, ext_v4, port, "o4")) == f"X o4 from ::ffff:{node_v4}"
    assert b.call(lambda: tcp_ask(traffic, ext_v6, port, "o6")) == f"X o6 from {node_v6}"
    # Pod to pod keeps the source.
    reply = b.call(lambda: tcp_ask(traffic, att_a.ip(4), port, "p"))
    assert reply == f"A p from ::ffff:{att_b.ip(4)}"

    # A rule flushed behind our back is put back by the next ADD.
    chain = masq_chain(net.name, ipaddress.ip_network(net.v4))
    node.run("iptables", "-t", "nat", "-F", chain)
    att_b.delete()
    assert network_rules(node, net, 4) == masq_rules(node, net, 4)[:1]
    att_b.add()
    assert network_rules(node, net, 4) == masq_rules(node, net, 4)

    # The last DEL removes them, even with the netns gone first.
    att_b.delete()
    assert network_rules(node, net, 4) == masq_rules(node, net, 4)
    a.delete()
    att_a.delete()
    for version in (4, 6):
        assert network_rules(node, net, version) == []
    att_a.delete()  # DEL stays idempotent


def test_concurrent_adds_on_one_bridge(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
) -> None:
    conflist = net.conflist(net.bridge_conf(ipMasq=True))
    pods = [pod() for _ in range(8)]
    barrier = threading.Barrier(len(pods))

    def one(i: int) -> Attachment:
        att = Attachment(runner, conflist, f"conc-{i}", pods[i].path, in_process=i % 2 == 0)
        barrier.wait()
        att.add()
        return att

    with ThreadPoolExecutor(len(pods)) as ex:
        atts = list(ex.map(one, range(len(pods))))
    ips = [a.ip(4) for a in atts] + [a.ip(6) for a in atts]
    assert len(set(ips)) == 16
    host_links = links(node)
    vets = [a.result["interfaces"][1]["name"] for a in atts if a.result]
    assert all(host_links[v]["master"] == net.bridge for v in vets)
    with ThreadPoolExecutor(len(pods)) as ex:
        list(ex.map(lambda a: a.delete(), atts))
    assert not [f for f in os.listdir(net.data_dir / net.name) if f[0].isdigit()]
    assert not [r for r in node.iptables_rules(4) if net.name in r]


def test_ip_masq_check_costs_no_exec_while_the_ruleset_is_unchanged(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With iptables-nft, an ADD that finds the nftables generation where this process last
    saw the rules complete runs no iptables at all; any change to the ruleset (here a flush
    of our chain) sends the next ADD back to iptables-save, which repairs it."""
    monkeypatch.setattr(_iptables, "BINARIES", {4: "iptables-nft", 6: "ip6tables-nft"})
    conflist = net.conflist(net.bridge_conf(v6=False, ipMasq=True))
    ran: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        ran.append(argv)
        return real_run(argv, *args, **kwargs)

    atts = [Attachment(runner, conflist, f"gen-{i}", pod().path) for i in range(4)]
    atts[0].add()  # writes the rules
    atts[1].add()  # sees them with iptables-save
    monkeypatch.setattr(subprocess, "run", recording_run)
    atts[2].add()
    assert ran == []
    monkeypatch.setattr(subprocess, "run", real_run)
    node.run("iptables-nft", "-t", "nat", "-F", masq_chain(net.name, ipaddress.ip_network(net.v4)))
    monkeypatch.setattr(subprocess, "run", recording_run)
    atts[3].add()
    assert [os.path.basename(argv[0]) for argv in ran] == [
        "iptables-nft-save", "iptables-nft-save", "iptables-nft-restore",
    ]  # fmt: skip
    monkeypatch.setattr(subprocess, "run", real_run)
    assert network_rules(node, net, 4) == masq_rules(node, net, 4)
    for att in atts:
        att.delete()
    assert network_rules(node, net, 4) == []


def test_last_del_racing_an_add_keeps_the_new_pods_rules(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
) -> None:
    """The network's last DEL removes its ipMasq rules while another ADD is under way: either
    the DEL sees the new veth and keeps them, or the ADD puts them back. Never a pod without."""
    conflist = net.conflist(net.bridge_conf(v6=False, ipMasq=True))
    expected = masq_rules(node, net, 4)
    old = Attachment(runner, conflist, "race-0", pod().path)
    old.add()
    for i in range(1, 7):
        new = Attachment(runner, conflist, f"race-{i}", pod().path, in_process=i % 2 == 0)
        barrier = threading.Barrier(2)

        def step(att: Attachment, add: bool) -> None:
            barrier.wait()  # noqa: B023
            if add:
                att.add()
            else:
                att.delete()

        with ThreadPoolExecutor(2) as ex:
            list(ex.map(step, (old, new), (False, True)))
        assert network_rules(node, net, 4) == expected, f"round {i}"
        old = new
    old.delete()
    assert network_rules(node, net, 4) == []


def test_failed_add_rolls_back(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
) -> None:
    base = ipaddress.ip_network(net.v4)
    tiny = f"{base[0]}/30"  # one address for pods (.1 is the gateway)
    conf = net.bridge_conf(v6=False, ipMasq=True)
    conf["ipam"]["ranges"] = [[{"subnet": tiny}]]
    conflist = net.conflist(conf)
    a, b = pod(), pod()
    Attachment(runner, conflist, "fit", a.path).add()
    before = set(links(node))
    with pytest.raises(cni.CNIError, match="no IP addresses available"):
        Attachment(runner, conflist, "nofit", b.path).add()
    assert set(links(node)) == before
    assert "eth0" not in links(node, b)
    assert not [r for r in node.iptables_rules(4) if "nofit" in r]


def test_options_mtu_hairpin_promisc_mac(
    node: Node,
    pod: Callable[[], Netns],
    runner_for: Callable[[Node], Runner],
    net_factory: NetFactory,
) -> None:
    net = net_factory(node, None)
    runner = runner_for(node)
    p = pod()
    att = Attachment(
        runner,
        net.conflist(
            {**net.bridge_conf(mtu=1400, hairpinMode=True), "capabilities": {"mac": True}}
        ),
        "opts",
        p.path,
        runtime={"mac": "02:42:ac:11:00:99"},
    )
    res = att.add()
    veth = res["interfaces"][1]["name"]
    host = links(node)
    assert host[net.bridge]["mtu"] == 1400
    assert host[veth]["mtu"] == 1400
    assert host[veth]["linkinfo"]["info_slave_data"]["hairpin"] is True
    inside = links(node, p)["eth0"]
    assert inside["mtu"] == 1400
    assert inside["address"] == "02:42:ac:11:00:99" == res["interfaces"][2]["mac"]
    att.check()
    att.delete()

    net2 = net_factory(node, None)
    p2 = pod()
    att2 = Attachment(runner, net2.conflist(net2.bridge_conf(promiscMode=True)), "promisc", p2.path)
    att2.add()
    assert "PROMISC" in links(node)[net2.bridge]["flags"]
    att2.check()
    att2.delete()
    with pytest.raises(cni.CNIError, match="hairpin mode and promiscuous mode"):
        Attachment(
            runner,
            net2.conflist(net2.bridge_conf(promiscMode=True, hairpinMode=True)),
            "both",
            p2.path,
        ).add()
    with pytest.raises(cni.CNIError, match="not supported") as exc_info:
        Attachment(runner, net2.conflist(net2.bridge_conf(vlan=100)), "vlan", p2.path).add()
    assert exc_info.value.code == 2


def test_name_clashes(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
) -> None:
    node.run("ip", "link", "add", net.bridge, "type", "veth", "peer", "name", net.bridge + "p")
    with pytest.raises(cni.CNIError, match="already exists but is not a bridge"):
        Attachment(runner, net.conflist(net.bridge_conf()), "clash", pod().path).add()
    node.run("ip", "link", "del", net.bridge)
    # The container already has an eth0: refused, and nothing leaks.
    p = pod()
    node.run("ip", "link", "add", "eth0", "netns", p.name, "type", "veth", "peer", "name", "tmpx")
    before = set(links(node))
    with pytest.raises(cni.CNIError, match=r"container veth name provided \(eth0\) already exists"):
        Attachment(runner, net.conflist(net.bridge_conf()), "dup", p.path).add()
    assert set(links(node)) - before <= {net.bridge}  # the bridge itself may stay
    d = net.data_dir / net.name
    assert not d.exists() or not [f for f in os.listdir(d) if f[0].isdigit()]


def test_second_ipv4_subnet_on_bridge_is_refused(
    node: Node,
    pod: Callable[[], Netns],
    runner_for: Callable[[Node], Runner],
    net_factory: NetFactory,
) -> None:
    net = net_factory(node, None)
    other = net_factory(node, None)
    runner = runner_for(node)
    Attachment(runner, net.conflist(net.bridge_conf(v6=False)), "first", pod().path).add()
    conf = other.bridge_conf(v6=False)
    conf["bridge"] = net.bridge
    with pytest.raises(cni.CNIError, match="already has an IP address different from"):
        Attachment(runner, other.conflist(conf), "second", pod().path).add()


def test_not_a_netns_and_missing_ipam_plugin(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    tmp_path: Any,
) -> None:
    # A pin file whose namespace was unmounted: ADD refuses, DEL is a no-op.
    stale = tmp_path / "stale-netns"
    stale.write_text("")
    att = Attachment(runner, net.conflist(net.bridge_conf()), "stale", str(stale))
    with pytest.raises(cni.CNIError, match="not a network namespace") as exc_info:
        att.add()
    assert exc_info.value.code == 8
    att.delete()
    # An IPAM type that is nowhere in CNI_PATH: a clear error, nothing left.
    p = pod()
    before = set(links(node))
    bad = Attachment(
        runner, net.conflist(net.bridge_conf(ipam_type="no-such-ipam")), "noipam", p.path
    )
    with pytest.raises(cni.CNIError, match="failed to find plugin 'no-such-ipam'"):
        bad.add()
    assert set(links(node)) - before <= {net.bridge}
    assert "eth0" not in links(node, p)

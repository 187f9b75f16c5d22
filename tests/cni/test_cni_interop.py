"""Our plugins and Debian's reference plugins (/usr/lib/cni) in one conflist.

Every combination runs ADD, CHECK and DEL for real in a node netns, checks
traffic reaches the pod and that nothing is left behind.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Any

import pytest

import cni
from tests.cni.conftest import Net
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

POD_PORT = 8080

pytestmark = pytest.mark.usefixtures("reference_plugins")


def portmap(kind: str) -> dict[str, Any]:
    return {"type": kind, "capabilities": {"portMappings": True}}


def leftovers(node: Node, net: Net) -> list[str]:
    rules = node.iptables_rules(4) + node.iptables_rules(6)
    return [r for r in rules if net.name in r or r.startswith("-N CNI-DN-")]


def reservations(net: Net) -> list[str]:
    d = net.data_dir / net.name
    return sorted(f for f in os.listdir(d) if f[0].isdigit() or f.startswith("fd"))


@pytest.mark.parametrize(
    ("bridge", "ipam", "pm"),
    [
        ("bridge", "criruntime-host-local", "criruntime-portmap"),
        ("criruntime-bridge", "host-local", "portmap"),
        ("criruntime-bridge", "criruntime-host-local", "portmap"),
        ("bridge", "host-local", "criruntime-portmap"),
    ],
    ids=[
        "ref-bridge+our-ipam+our-portmap",
        "our-bridge+ref-ipam+ref-portmap",
        "our-bridge+our-ipam+ref-portmap",
        "ref-bridge+ref-ipam+our-portmap",
    ],
)
@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "exec"])
def test_mixed_conflist(
    bridge: str,
    ipam: str,
    pm: str,
    in_process: bool,
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
) -> None:
    conflist = net.conflist(net.bridge_conf(bridge, ipam, ipMasq=True), portmap(pm))
    p = pod()
    port = free_port()
    att = Attachment(
        runner,
        conflist,
        "mix-1",
        p.path,
        runtime={
            "portMappings": [{"hostPort": port, "containerPort": POD_PORT, "protocol": "tcp"}]
        },
        in_process=in_process,
    )
    res = att.add()
    v4 = ipaddress.ip_network(net.v4)
    assert res["ips"][0]["address"] == f"{v4[2]}/24"
    assert res["interfaces"][2]["sandbox"] == p.path
    assert reservations(net) == sorted([str(v4[2]), str(ipaddress.ip_network(net.v6)[2])])
    assert (net.data_dir / net.name / str(v4[2])).read_bytes() == b"mix-1\r\neth0"
    servers(p, "P", POD_PORT)
    assert node.call(lambda: tcp_ask(traffic, att.ip(4), POD_PORT, "d")).startswith("P d from ")
    assert node.call(lambda: tcp_ask(traffic, att.ip(6), POD_PORT, "d6")).startswith("P d6 from ")
    assert (
        node.call(lambda: tcp_ask(traffic, "127.0.0.1", port, "lo")) == f"P lo from ::ffff:{v4[1]}"
    )
    # Debian's portmap 1.1.1 CHECK is broken for dual-stack pods (it checks the
    # IPv4 rules in ip6tables; fixed upstream later), so it is skipped there.
    att.check(skip=("portmap",))
    att.delete()
    assert reservations(net) == []
    assert leftovers(node, net) == []
    att.delete()


def test_bridge_del_of_a_reference_add(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
) -> None:
    """A conflist switched from the reference bridge to ours still tears down cleanly: the
    reference's per-pod ipMasq chain goes with the network's last DEL.

    (The other way round, the reference DEL fails on a pod we added: it insists on deleting
    its per-pod chain, which our network-wide rules do not have. Runtimes DEL with the config
    cached at ADD, as libcni and criruntime's executor do, so the switch never reaches a
    plugin there.)"""
    p = pod()
    added = Attachment(runner, net.conflist(net.bridge_conf("bridge", ipMasq=True)), "sw-1", p.path)
    added.add()
    assert any('id: \\"sw-1\\"' in r for r in leftovers(node, net))
    removed = Attachment(
        runner, net.conflist(net.bridge_conf("criruntime-bridge", ipMasq=True)), "sw-1", p.path
    )
    removed.result = added.result
    removed.delete()
    assert reservations(net) == []
    assert leftovers(node, net) == []
    assert "eth0" not in node.run("ip", "-n", p.name, "link").stdout


def test_reference_pods_and_ours_share_a_bridge(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
) -> None:
    """Pods of the reference bridge and of ours on one network: the reference's per-pod
    chains and our network rules coexist, and the last DEL (ours) removes both."""
    ours, theirs = pod(), pod()
    a = Attachment(
        runner, net.conflist(net.bridge_conf("criruntime-bridge", ipMasq=True)), "o", ours.path
    )
    b = Attachment(runner, net.conflist(net.bridge_conf("bridge", ipMasq=True)), "r", theirs.path)
    a.add()
    b.add()
    b.delete()  # the reference removes its own chain; ours stay for pod "o"
    assert [r for r in leftovers(node, net) if 'id: \\"r\\"' in r] == []
    assert leftovers(node, net)
    a.delete()
    assert leftovers(node, net) == []
    assert reservations(net) == []


def test_portmap_rules_identical_to_reference(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
) -> None:
    """Same iptables rules byte for byte, and each removes/CHECKs the other's."""
    p = pod()
    v4 = ipaddress.ip_network(net.v4)
    conf = net.bridge_conf(v6=False)
    # One allocatable address, so both runs give the pod the same IP.
    conf["ipam"]["ranges"] = [
        [{"subnet": net.v4, "rangeStart": str(v4[2]), "rangeEnd": str(v4[2])}]
    ]
    rt = {
        "portMappings": [
            {"hostPort": free_port(), "containerPort": POD_PORT, "protocol": "tcp"},
            {
                "hostPort": free_port(),
                "containerPort": 53,
                "protocol": "udp",
                "hostIP": "127.0.0.1",
            },
        ]
    }
    rules: dict[str, list[str]] = {}
    for add_with, del_with in (
        ("criruntime-portmap", "portmap"),
        ("portmap", "criruntime-portmap"),
    ):
        added = Attachment(
            runner, net.conflist(conf, portmap(add_with)), "pmsw", p.path, runtime=rt
        )
        added.add()
        rules[add_with] = [r for r in node.iptables_rules(4) if "CNI-" in r]
        removed = Attachment(
            runner, net.conflist(conf, portmap(del_with)), "pmsw", p.path, runtime=rt
        )
        removed.result = added.result
        if add_with == "portmap":
            # Ours CHECKs the reference's rules. (Debian's portmap 1.1.1 CHECK is
            # itself broken: it always checks ip6tables too, where nothing is.)
            removed.check()
        removed.delete()
        assert leftovers(node, net) == []
    assert rules["criruntime-portmap"] == rules["portmap"]


def test_clash_with_reference_portmap_holder(
    node: Node,
    pod: Callable[[], Netns],
    runner: Runner,
    net: Net,
    servers: Callable[[Netns, str, int], TcpServer],
    traffic: Traffic,
) -> None:
    port = free_port()
    rt = {"portMappings": [{"hostPort": port, "containerPort": POD_PORT, "protocol": "tcp"}]}
    a, b = pod(), pod()
    first = Attachment(
        runner,
        net.conflist(net.bridge_conf(), portmap("portmap")),
        "ref-holder",
        a.path,
        runtime=rt,
    )
    first.add()
    second = Attachment(
        runner,
        net.conflist(net.bridge_conf(), portmap("criruntime-portmap")),
        "ours",
        b.path,
        runtime=rt,
    )
    with pytest.raises(cni.CNIError, match="already mapped") as exc_info:
        second.add()
    assert exc_info.value.code == 100
    second.delete()
    servers(a, "A", POD_PORT)
    assert node.call(lambda: tcp_ask(traffic, "127.0.0.1", port)).startswith("A ")

"""The bare netlink reads (cni._netlink) against what `ip` reports, in a netns of the test."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
from collections.abc import Callable

import pytest

from cni._netlink import (
    Netlink,
    addresses_of,
    delete_link_by_name,
    link_by_index,
    link_by_name,
    port_names,
)
from tests.cni.helpers import Netns, Node


def test_links_ports_and_addresses_match_ip(node: Node) -> None:
    node.run("ip", "link", "add", "nlbr", "type", "bridge")
    node.run("ip", "link", "add", "nlv0", "mtu", "1400", "type", "veth", "peer", "name", "nlv1")
    node.run("ip", "link", "set", "nlv0", "master", "nlbr")
    node.run("ip", "link", "set", "nlv0", "up")
    node.run("ip", "addr", "add", "10.254.3.1/24", "dev", "nlbr")
    node.run("ip", "addr", "add", "fd00:254:3::1/64", "dev", "nlbr", "nodad")
    shown = {link["ifname"]: link for link in json.loads(node.run("ip", "-j", "-d", "link").stdout)}
    for name in ("lo", "nlbr", "nlv0", "nlv1"):
        link = node.call(lambda: link_by_name(name))  # noqa: B023
        want = shown[name]
        assert link is not None
        assert (link.index, link.name, link.mtu, link.operstate) == (
            want["ifindex"], name, want["mtu"], want["operstate"],
        )  # fmt: skip
        assert link.mac == want.get("address", "00:00:00:00:00:00")
        assert link.kind == want.get("linkinfo", {}).get("info_kind", "")
        assert node.call(lambda: link_by_index(link.index)) == link  # noqa: B023
    bridge = shown["nlbr"]["ifindex"]
    assert node.call(lambda: link_by_name("nlv0")).master == bridge  # type: ignore[union-attr]
    assert node.call(lambda: link_by_name("nope")) is None
    assert node.call(lambda: link_by_index(999999)) is None
    assert node.call(lambda: port_names(bridge)) == ["nlv0"]
    assert node.call(lambda: port_names(bridge, exclude="nlv0")) == []
    addrs = {str(a) for a in node.call(lambda: addresses_of(bridge))}
    assert addrs >= {"10.254.3.1/24", "fd00:254:3::1/64"}
    assert {str(a) for a in node.call(lambda: addresses_of(bridge, 2))} == {"10.254.3.1/24"}
    node.call(lambda: delete_link_by_name("nlv1"))  # the peer goes with it
    assert node.call(lambda: link_by_name("nlv0")) is None
    assert node.call(lambda: port_names(bridge)) == []
    node.call(lambda: delete_link_by_name("nlv1"))  # already gone: fine


def test_link_address_and_route_writes_match_ip(node: Node) -> None:
    """What ADD writes with bare netlink is what `ip` shows (and what pyroute2 wrote)."""
    node.run("ip", "link", "add", "nwbr", "type", "bridge")
    node.run("ip", "link", "add", "nwv0", "type", "veth", "peer", "name", "nwv1")
    node.run("ip", "link", "set", "nwv1", "up")

    def write() -> bool:
        with Netlink() as nl:
            port, bridge = link_by_name("nwv0"), link_by_name("nwbr")
            assert port is not None and bridge is not None
            nl.set_master(port.index, bridge.index)
            nl.set_hairpin(port.index, True)
            nl.set_up(port.index)
            nl.add_address(port.index, ipaddress.ip_interface("10.254.4.5/24"))
            nl.add_address(port.index, ipaddress.ip_interface("fd00:254:4::5/64"), nodad=True)
            gw = ipaddress.ip_address("10.254.4.1")
            nl.add_route(ipaddress.ip_network("0.0.0.0/0"), gw, port.index)
            nl.add_route(ipaddress.ip_network("10.253.0.0/16"), None, port.index)
            with pytest.raises(OSError) as exc:
                nl.add_address(port.index, ipaddress.ip_interface("10.254.4.5/24"))
            assert exc.value.errno == errno.EEXIST
            with pytest.raises(OSError) as exc:
                nl.set_up(999999)
            assert exc.value.errno == errno.ENODEV
            return nl._ipr_socket is None  # nothing here needed pyroute2

    assert node.call(write)
    link = json.loads(node.run("ip", "-j", "-d", "link", "show", "nwv0").stdout)[0]
    assert link["master"] == "nwbr" and "UP" in link["flags"]
    assert link["linkinfo"]["info_slave_data"]["hairpin"] is True
    addrs = json.loads(node.run("ip", "-j", "addr", "show", "nwv0").stdout)[0]["addr_info"]
    v4 = next(a for a in addrs if a["family"] == "inet")
    assert (v4["local"], v4["prefixlen"], v4["broadcast"]) == ("10.254.4.5", 24, "10.254.4.255")
    v6 = next(a for a in addrs if a["family"] == "inet6" and a["scope"] == "global")
    assert v6["local"] == "fd00:254:4::5" and v6.get("nodad") is True
    routes = json.loads(node.run("ip", "-j", "-d", "route", "show", "dev", "nwv0").stdout)
    static = {r["dst"]: r for r in routes if r.get("protocol") == "static"}
    assert static["default"]["gateway"] == "10.254.4.1"
    assert static["10.253.0.0/16"]["scope"] == "global"


def test_veth_born_in_another_netns(node: Node, pod: Callable[[], Netns]) -> None:
    p = pod()
    fd = os.open(p.path, os.O_RDONLY)

    def create() -> None:
        with Netlink() as nl:
            nl.create_veth("nwv9", "eth0", fd, mtu=1400, peer_mac="02:42:ac:11:00:99")
            with pytest.raises(OSError) as exc:
                nl.create_veth("nwv9", "eth1", fd)
            assert exc.value.errno == errno.EEXIST

    try:
        node.call(create)
    finally:
        os.close(fd)
    host = json.loads(node.run("ip", "-j", "-d", "link", "show", "nwv9").stdout)[0]
    inside = json.loads(node.run("ip", "-n", p.name, "-j", "-d", "link", "show", "eth0").stdout)[0]
    assert host["linkinfo"]["info_kind"] == inside["linkinfo"]["info_kind"] == "veth"
    assert host["mtu"] == inside["mtu"] == 1400
    assert inside["address"] == "02:42:ac:11:00:99"
    assert "eth1" not in node.run("ip", "-n", p.name, "link").stdout

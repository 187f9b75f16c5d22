"""The bare netlink reads (cni._netlink) against what `ip` reports, in a netns of the test."""

from __future__ import annotations

import json

from cni._netlink import (
    addresses_of,
    delete_link_by_name,
    link_by_index,
    link_by_name,
    port_names,
)
from tests.cni.helpers import Node


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

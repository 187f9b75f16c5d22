"""bridge: one veth per pod, host end on a Linux bridge (reference `bridge`).

Config keys as the reference plugin: bridge, isGateway, isDefaultGateway,
forceAddress, ipMasq, mtu, hairpinMode, promiscMode, enabledad, ipam, dns,
and the MAC from CNI_ARGS MAC= / args.cni.mac / runtimeConfig.mac. VLAN,
macspoofchk, portIsolation and disableContainerInterface are refused with
"unsupported field" rather than silently ignored.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cni._ipam import ipam_add, ipam_check, ipam_del, ipam_type
from cni._ipmasq import release_ipmasq, setup_ipmasq
from cni._netlink import (
    AF_INET,
    AF_INET6,
    Link,
    Netlink,
    delete_link_by_name,
    port_names,
)
from cni._ns import (
    NetnsGoneError,
    NotANetnsError,
    open_netns,
    run_in_netns,
    run_in_netns_fd,
    start_in_netns_fd,
)
from cni._skel import CmdArgs, Plugin, main_for
from cni._sysctl import try_write_sysctl, write_sysctl
from cni._types import DNS, IPConfig, IPInterface, Result, Route
from cni._types import Interface as ResultInterface
from cni.errors import CNIError, ErrorCode

PLUGIN_TYPE = "criruntime-bridge"
DEFAULT_BRIDGE = "cni0"
# Index of the container interface in result.interfaces: [bridge, host veth, container].
CONTAINER_IF_INDEX = 2

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME_RE = re.compile(r"^[^/:\s]{1,15}$")


@dataclass
class BridgeConf:
    bridge: str
    is_gw: bool
    is_default_gw: bool
    force_address: bool
    ip_masq: bool
    mtu: int
    hairpin: bool
    promisc: bool
    enable_dad: bool
    mac: str
    dns: DNS


def _flag(conf: dict[str, Any], key: str) -> bool:
    value = conf.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise CNIError(
            ErrorCode.DECODING_FAILURE, f"failed to load netconf: {key} must be a boolean"
        )
    return value


def load_conf(args: CmdArgs) -> BridgeConf:
    conf = args.netconf
    name = conf.get("bridge") or DEFAULT_BRIDGE
    if not isinstance(name, str) or not _IFNAME_RE.match(name) or name in (".", ".."):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid bridge name {name!r}")
    mtu = conf.get("mtu") or 0
    if not isinstance(mtu, int) or isinstance(mtu, bool) or mtu < 0:
        raise CNIError(
            ErrorCode.DECODING_FAILURE, "failed to load netconf: mtu must be a positive integer"
        )
    # Features of the reference plugin we do not implement: refuse loudly.
    for key in ("vlan", "vlanTrunk", "macspoofchk", "portIsolation", "disableContainerInterface"):
        if conf.get(key):
            raise CNIError(ErrorCode.UNSUPPORTED_FIELD, f"bridge option {key!r} is not supported")
    backend = conf.get("ipMasqBackend")
    if backend not in (None, "iptables"):
        raise CNIError(ErrorCode.UNSUPPORTED_FIELD, f"ipMasqBackend {backend!r} is not supported")

    mac = args.cni_args().get("MAC", "")
    cni_args = conf.get("args", {}).get("cni") if isinstance(conf.get("args"), dict) else None
    if isinstance(cni_args, dict) and cni_args.get("mac"):
        mac = str(cni_args["mac"])
    if args.runtime_config.get("mac"):
        mac = str(args.runtime_config["mac"])
    if mac and not _MAC_RE.match(mac):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid MAC address {mac!r}")

    is_default_gw = _flag(conf, "isDefaultGateway")
    return BridgeConf(
        bridge=name,
        # isDefaultGateway implies isGateway, as in the reference plugin.
        is_gw=_flag(conf, "isGateway") or is_default_gw,
        is_default_gw=is_default_gw,
        force_address=_flag(conf, "forceAddress"),
        ip_masq=_flag(conf, "ipMasq"),
        mtu=mtu,
        hairpin=_flag(conf, "hairpinMode"),
        promisc=_flag(conf, "promiscMode"),
        enable_dad=_flag(conf, "enabledad"),
        mac=mac.lower(),
        dns=DNS.from_json(conf.get("dns")),
    )


# -- host side -----------------------------------------------------------------


def ensure_bridge(nl: Netlink, n: BridgeConf) -> Link:
    br = nl.link(n.bridge)  # made by the network's first ADD: a lookup is all the others need
    if br is None:
        try:
            nl.create_bridge(n.bridge, n.mtu)
        except OSError as exc:
            if exc.errno != errno.EEXIST:  # EEXIST: a concurrent ADD made it
                raise CNIError(
                    ErrorCode.INTERNAL, f"failed to create bridge {n.bridge!r}: {exc.strerror}"
                ) from exc
        br = nl.link(n.bridge)
    if br is None:
        raise CNIError(ErrorCode.INTERNAL, f"could not lookup {n.bridge!r}")
    if br.kind != "bridge":
        raise CNIError(ErrorCode.INTERNAL, f"{n.bridge!r} already exists but is not a bridge")
    if n.promisc and not br.promisc:
        nl.set_promisc(br.index, True)
    # We own the routes of this interface; router advertisements must not add any.
    try_write_sysctl(f"net/ipv6/conf/{n.bridge}/accept_ra", "0")
    if not br.is_up:
        nl.set_up(br.index)
    return br


def setup_veth(nl: Netlink, br: Link, netns_fd: int, args: CmdArgs, n: BridgeConf) -> Link:
    """Create the pair (pod end straight into the netns) and plug the host end in."""
    for _ in range(16):
        host_name = "veth" + secrets.token_hex(4)  # random like the reference plugin
        try:
            nl.create_veth(host_name, args.ifname, netns_fd, mtu=n.mtu, peer_mac=n.mac)
            break
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise CNIError(
                    ErrorCode.INTERNAL, f"failed to create veth for {args.ifname}: {exc.strerror}"
                ) from exc
            if nl.link(host_name) is None:
                # The clash is on the container side.
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"container veth name provided ({args.ifname}) already exists",
                ) from exc
    else:
        raise CNIError(ErrorCode.INTERNAL, "could not find a free host veth name")
    host = nl.link(host_name)
    if host is None:
        raise CNIError(ErrorCode.INTERNAL, f"failed to lookup {host_name!r}")
    try:
        nl.set_master(host.index, br.index)
        if n.hairpin:
            nl.set_hairpin(host.index, True)
        nl.set_up(host.index)
    except BaseException:
        nl.delete_link(host.index)
        raise
    return host


def calc_gateways(result: Result, n: BridgeConf) -> list[IPInterface]:
    """Gateway addresses for the bridge, and default routes if asked for."""
    gws: list[IPInterface] = []
    default_found = {4: False, 6: False}
    for ipc in result.ips:
        fam = ipc.address.version
        ipc.interface = CONTAINER_IF_INDEX
        if ipc.gateway is None and n.is_gw:
            ipc.gateway = ipc.address.network.network_address + 1
        if n.is_default_gw and not default_found[fam]:
            default_found[fam] = any(
                r.gw is not None and r.dst.prefixlen == 0 and r.dst.version == fam
                for r in result.routes
            )
            if not default_found[fam]:
                dst = ipaddress.ip_network("0.0.0.0/0" if fam == 4 else "::/0")
                result.routes.append(Route(dst=dst, gw=ipc.gateway))
                default_found[fam] = True
        if n.is_gw and ipc.gateway is not None:
            gws.append(ipaddress.ip_interface(f"{ipc.gateway}/{ipc.address.network.prefixlen}"))
    return gws


def ensure_addr(nl: Netlink, br: Link, gw: IPInterface, force: bool) -> None:
    family = AF_INET if gw.version == 4 else AF_INET6
    for addr in nl.addresses(br.index, family):
        if addr == gw:
            return
        # Several IPv6 gateways may share a bridge when their subnets do not
        # overlap; IPv4 gets one address (reference ensureAddr semantics).
        if gw.version == 4 or addr.ip in gw.network or gw.ip in addr.network:
            if not force:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"failed to set bridge addr: {br.name!r} already has an IP address "
                    f"different from {gw}",
                )
            nl.delete_address(br.index, addr)
    try:
        # No DAD for our own gateway: it is usable at once, and only pods
        # live on this segment.
        nl.add_address(br.index, gw, nodad=True)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise CNIError(
                ErrorCode.INTERNAL, f"could not add IP address {gw} to {br.name!r}: {exc.strerror}"
            ) from exc
    # Pin the bridge MAC; otherwise it follows the lowest port MAC and
    # changes as pods come and go (neighbour caches in pods go stale).
    nl.set_mac(br.index, br.mac)


def enable_forwarding(version: int) -> None:
    if version == 4:
        write_sysctl("net/ipv4/ip_forward", "1")
    else:
        write_sysctl("net/ipv6/conf/all/forwarding", "1")


# -- container side (these run inside the pod netns) ----------------------------


def _configure_iface(ifname: str, result: Result, enable_dad: bool) -> str:
    """ipam.ConfigureIface: link up, addresses, routes. Returns the MAC."""
    mine = [ip for ip in result.ips if ip.interface in (None, CONTAINER_IF_INDEX)]
    with Netlink() as nl:
        link = nl.link(ifname)
        if link is None:
            raise CNIError(ErrorCode.INTERNAL, f"failed to lookup {ifname!r}")
        if any(ip.address.version == 6 for ip in mine):
            try_write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "0")
        # DAD off by default: a fresh veth address is ours, and DAD would
        # keep it tentative (unusable) for a second or more.
        try_write_sysctl(f"net/ipv6/conf/{ifname}/accept_dad", "1" if enable_dad else "0")
        if enable_dad:
            try_write_sysctl(f"net/ipv6/conf/{ifname}/enhanced_dad", "1")
        try_write_sysctl(f"net/ipv4/conf/{ifname}/arp_notify", "1")
        nl.set_up(link.index)
        for ipc in mine:
            try:
                nl.add_address(link.index, ipc.address, nodad=not enable_dad)
            except OSError as exc:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"failed to add IP addr {ipc.address} to {ifname!r}: {exc.strerror}",
                ) from exc
        default_gw: dict[int, Any] = {}
        for ipc in mine:
            if ipc.gateway is not None:
                default_gw.setdefault(ipc.address.version, ipc.gateway)
        for route in result.routes:
            gw = route.gw if route.gw is not None else default_gw.get(route.dst.version)
            try:
                nl.add_route(route.dst, gw, link.index)
            except OSError as exc:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"failed to add route '{route.dst} via {gw} dev {ifname}': {exc.strerror}",
                ) from exc
        return link.mac


def _link_up_mac(ifname: str) -> Callable[[], str]:
    def run() -> str:
        with Netlink() as nl:
            link = nl.link(ifname)
            if link is None:
                raise CNIError(ErrorCode.INTERNAL, f"failed to retrieve link {ifname!r}")
            nl.set_up(link.index)
            return link.mac

    return run


def _wait_oper_up(nl: Netlink, name: str) -> Link:
    link: Link | None = None
    for delay in (0.0, 0.05, 0.5, 1.0, 1.0):
        time.sleep(delay)
        link = nl.link(name)
        if link is None:
            raise CNIError(ErrorCode.INTERNAL, f"host veth {name!r} disappeared")
        if link.operstate == "UP":
            return link
    assert link is not None
    raise CNIError(ErrorCode.INTERNAL, f"bridge port in error state: {link.operstate}")


# -- commands --------------------------------------------------------------------


def cmd_add(args: CmdArgs) -> Result:
    n = load_conf(args)
    layer3 = ipam_type(args) != ""
    if n.hairpin and n.promisc:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            "cannot set hairpin mode and promiscuous mode at the same time",
        )
    netns_fd = open_netns(args.netns)
    host: Link | None = None
    ipam_done = False
    masq_done = False
    try:
        with Netlink() as nl:
            br = ensure_bridge(nl, n)
            host = setup_veth(nl, br, netns_fd, args, n)
            result = Result(
                interfaces=[
                    ResultInterface(name=br.name, mac=br.mac),
                    ResultInterface(name=host.name, mac=host.mac),
                    ResultInterface(name=args.ifname, sandbox=args.netns),
                ]
            )
            if layer3:
                ipam_result = ipam_add(args)
                ipam_done = True
                result.ips = ipam_result.ips
                result.routes = ipam_result.routes
                result.dns = ipam_result.dns
                if not result.ips:
                    raise CNIError(ErrorCode.INTERNAL, "IPAM plugin returned missing IP config")
                gws = calc_gateways(result, n)
                # The pod side and the host side do not depend on each other: the pod's
                # interface is set up in its netns while this thread does the bridge and
                # the iptables check (an exec), and the two waits overlap.
                configured = start_in_netns_fd(
                    netns_fd,
                    lambda: _configure_iface(args.ifname, result, n.enable_dad),
                    args.netns,
                )
                try:
                    for gw in gws:
                        ensure_addr(nl, br, gw, n.force_address)
                    for version in sorted({gw.version for gw in gws}):
                        enable_forwarding(version)
                    if n.ip_masq:
                        masq_done = True
                        setup_ipmasq([ip.address.network for ip in result.ips], args.name)
                finally:
                    cont_mac = configured()  # joined even when the host side failed
            else:
                cont_mac = run_in_netns_fd(netns_fd, _link_up_mac(args.ifname), args.netns)
            result.interfaces[CONTAINER_IF_INDEX].mac = cont_mac
            host = _wait_oper_up(nl, host.name)
            result.interfaces[1].mac = host.mac
            # The bridge MAC may change when its first port or address arrives.
            br_now = nl.link(n.bridge)
            if br_now is not None:
                result.interfaces[0].mac = br_now.mac
        if n.dns.is_set():
            result.dns = n.dns
        return result
    except BaseException:
        _undo_add(args, n.bridge, host, ipam_done, masq_done)
        raise
    finally:
        os.close(netns_fd)


def _undo_add(
    args: CmdArgs, bridge: str, host: Link | None, ipam_done: bool, masq_done: bool
) -> None:
    """Best-effort rollback of a failed ADD; the original error is what counts."""
    if host is not None:
        with contextlib.suppress(Exception), Netlink() as nl:
            nl.delete_link(host.index)  # takes the pod end with it
    if masq_done:
        with contextlib.suppress(Exception):
            release_ipmasq(args.name, _ports_left(bridge, ""))
    if ipam_done:
        with contextlib.suppress(Exception):
            ipam_del(args)


def _delete_link(ifname: str) -> Callable[[], None]:
    def run() -> None:
        delete_link_by_name(ifname)  # takes the host end with it; none there is fine

    return run


def cmd_del(args: CmdArgs) -> None:
    n = load_conf(args)
    layer3 = ipam_type(args) != ""
    if args.netns:
        # A vanished namespace took the veth pair with it: nothing to do there.
        with contextlib.suppress(NetnsGoneError, NotANetnsError):
            run_in_netns(args.netns, _delete_link(args.ifname))
    if layer3:
        ipam_del(args)
        if n.ip_masq:
            # The host end is left out of the count: when the netns was already gone, the
            # kernel may still be tearing that veth down.
            prev = args.prev_result()
            own = (
                next((i.name for i in prev.interfaces if not i.sandbox and i.name != n.bridge), "")
                if prev is not None
                else ""
            )
            versions = sorted({ip.address.version for ip in prev.ips}) if prev else [4, 6]
            release_ipmasq(args.name, _ports_left(n.bridge, own), versions or [4, 6])


def _ports_left(bridge: str, own_veth: str) -> Callable[[], list[str]]:
    def ports() -> list[str]:
        try:
            index = socket.if_nametoindex(bridge)  # in this thread's netns, as netlink
        except OSError:
            return []  # no bridge, no pods
        return port_names(index, exclude=own_veth)

    return ports


def _inspect_container(
    ifname: str,
) -> Callable[[], tuple[Link | None, list[IPInterface], list[Route]]]:
    def run() -> tuple[Link | None, list[IPInterface], list[Route]]:
        with Netlink() as nl:
            link = nl.link(ifname)
            if link is None:
                return None, [], []
            addrs = nl.addresses(link.index)
            routes = [
                Route(dst=r.dst, gw=r.gateway)
                for fam in (AF_INET, AF_INET6)
                for r in nl.routes(fam)
            ]
            return link, addrs, routes

    return run


def cmd_check(args: CmdArgs) -> None:
    n = load_conf(args)
    layer3 = ipam_type(args) != ""
    prev = args.prev_result()
    if layer3:
        ipam_check(args)
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Required prevResult missing")

    cont_if = next(
        (i for i in prev.interfaces if i.name == args.ifname and i.sandbox == args.netns), None
    )
    if cont_if is None:
        raise CNIError(
            ErrorCode.INTERNAL, f"CNI created interface in container {args.ifname} not found"
        )
    link, addrs, routes = run_in_netns(args.netns, _inspect_container(args.ifname))
    if link is None:
        raise CNIError(ErrorCode.INTERNAL, f"Interface name {args.ifname} not found")
    if link.kind != "veth":
        raise CNIError(
            ErrorCode.INTERNAL, f"Error: Container interface {link.name} not of type veth"
        )
    if cont_if.mac and cont_if.mac.lower() != link.mac.lower():
        raise CNIError(
            ErrorCode.INTERNAL,
            f"Interface {link.name} Mac {cont_if.mac} doesn't match container Mac: {link.mac}",
        )

    with Netlink() as nl:
        br = nl.link(n.bridge)
        if br is None:
            raise CNIError(
                ErrorCode.INTERNAL, f"CNI created bridge {n.bridge} in host namespace was not found"
            )
        if br.kind != "bridge":
            raise CNIError(
                ErrorCode.INTERNAL, f"Interface {n.bridge} does not have link type of bridge"
            )
        if br.promisc != n.promisc:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"Bridge interface {n.bridge} configured Promisc Mode {n.promisc} "
                f"doesn't match current state: {br.promisc}",
            )
        host = nl.link_by_index(link.peer_index)
        if (
            host is None
            or host.kind != "veth"
            or host.master != br.index
            or host.peer_index != link.index
        ):
            raise CNIError(
                ErrorCode.INTERNAL, f"CNI veth created for bridge {n.bridge} was not found"
            )

    _check_ips(args.ifname, prev.ips, prev, addrs)
    for route in prev.routes:
        if not any(r.dst == route.dst and (route.gw is None or r.gw == route.gw) for r in routes):
            raise CNIError(
                ErrorCode.INTERNAL, f"Expected Route {route.to_json()} not found in route table"
            )


def _check_ips(ifname: str, ips: list[IPConfig], prev: Result, addrs: list[IPInterface]) -> None:
    for ipc in ips:
        if ipc.interface is not None and (
            not 0 <= ipc.interface < len(prev.interfaces)
            or prev.interfaces[ipc.interface].name != ifname
        ):
            continue
        if ipc.address not in addrs:
            raise CNIError(ErrorCode.INTERNAL, f"ip {ipc.address} not found on interface {ifname}")


PLUGIN = Plugin(name=PLUGIN_TYPE, add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    main_for(PLUGIN_TYPE)


if __name__ == "__main__":
    main()

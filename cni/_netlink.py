"""Netlink for the plugins: bare rtnetlink requests on a pod's path, pyroute2 for the rest.

Everything ADD and DEL do for a pod (link and address reads, the veth pair, bridge port,
hairpin, addresses, routes, the veth's deletion) is one request each, packed and read with
struct, in the calling thread's netns. pyroute2 is untyped, costs ~0.25 s and ~20 MB RSS to
import and ~1.5 ms to open a socket, so it is imported here only, on first use by the rare
paths (a network's first ADD, CHECK, rollback, portmap's route lookup). One `Netlink()`
talks to the netns of the thread that created it (see cni._ns), and must be closed.

pyroute2's IPRoute drives its own asyncio loop with run_until_complete, so it
must not be used from a thread that is running an event loop: the daemon calls
plugins through asyncio.to_thread / an executor.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cni._types import IPAddress, IPInterface, IPNetwork

T = TypeVar("T")

IFF_UP = 0x1
IFF_PROMISC = 0x100
AF_INET = 2
AF_INET6 = 10
IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254

_NetlinkError: type[Exception] | None = None


def _netlink_error() -> type[Exception]:
    global _NetlinkError
    if _NetlinkError is None:
        from pyroute2.netlink.exceptions import (  # type: ignore[import-untyped]
            NetlinkError,
        )

        _NetlinkError = NetlinkError
    return _NetlinkError


def _call(fn: Callable[[], T]) -> T:
    """Turn pyroute2's NetlinkError into OSError so callers can test errno."""
    try:
        return fn()
    except _netlink_error() as exc:
        code = int(getattr(exc, "code", 0) or 0)
        raise OSError(code, os_strerror(code)) from exc


def os_strerror(code: int) -> str:
    import os

    try:
        return os.strerror(code)
    except ValueError:
        return f"netlink error {code}"


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    flags: int
    master: int
    # For a veth: the peer's ifindex (in the peer's netns).
    peer_index: int
    operstate: str

    @property
    def is_up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & IFF_PROMISC)


@dataclass(frozen=True)
class RouteEntry:
    dst: IPNetwork
    gateway: IPAddress | None
    oif: int
    table: int


class Netlink:
    def __init__(self) -> None:
        self._ipr_socket: Any = None

    @property
    def _ipr(self) -> Any:
        # Made on first use (~1.5 ms): a pod's ADD and DEL need none on their usual path.
        if self._ipr_socket is None:
            from pyroute2 import IPRoute  # type: ignore[import-untyped]

            self._ipr_socket = IPRoute()
        return self._ipr_socket

    def close(self) -> None:
        if self._ipr_socket is not None:
            self._ipr_socket.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- links -------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        return link_by_name(name)

    def link_by_index(self, index: int) -> Link | None:
        return link_by_index(index)

    def create_bridge(self, name: str, mtu: int = 0) -> None:
        kwargs: dict[str, Any] = {"ifname": name, "kind": "bridge"}
        if mtu:
            kwargs["mtu"] = mtu
        _call(lambda: self._ipr.link("add", **kwargs))

    def create_veth(
        self,
        name: str,
        peer_name: str,
        peer_netns_fd: int,
        mtu: int = 0,
        peer_mac: str = "",
    ) -> None:
        """Create a veth whose peer is born directly inside another netns.

        One RTM_NEWLINK does it: the peer never exists in this netns, so its
        name (usually "eth0") cannot clash with a host interface.
        """
        mtu_attr = _attr(_IFLA_MTU, _u32(mtu)) if mtu else b""
        peer = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr(_IFLA_IFNAME, peer_name.encode() + b"\0")
        peer += _attr(_IFLA_NET_NS_FD, _u32(peer_netns_fd)) + mtu_attr
        if peer_mac:
            peer += _attr(_IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", "")))
        data = _attr(_VETH_INFO_PEER | _NLA_F_NESTED, peer)
        linkinfo = _attr(_IFLA_INFO_KIND, b"veth\0") + _attr(_IFLA_INFO_DATA | _NLA_F_NESTED, data)
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr(_IFLA_IFNAME, name.encode() + b"\0")
        body += mtu_attr + _attr(_IFLA_LINKINFO | _NLA_F_NESTED, linkinfo)
        _rtnl(_RTM_NEWLINK, body, dump=False, ack=True, create=True)

    def delete_link(self, index: int) -> None:
        _call(lambda: self._ipr.link("del", index=index))

    def set_up(self, index: int) -> None:
        _setlink(_IFINFOMSG.pack(0, 0, index, IFF_UP, IFF_UP))

    def set_down(self, index: int) -> None:
        _call(lambda: self._ipr.link("set", index=index, state="down"))

    def set_master(self, index: int, master: int) -> None:
        _setlink(_IFINFOMSG.pack(0, 0, index, 0, 0) + _attr(_IFLA_MASTER, _u32(master)))

    def set_mac(self, index: int, mac: str) -> None:
        _call(lambda: self._ipr.link("set", index=index, address=mac))

    def set_promisc(self, index: int, on: bool) -> None:
        flags = IFF_PROMISC if on else 0
        _call(lambda: self._ipr.link("set", index=index, flags=flags, change=IFF_PROMISC))

    def set_hairpin(self, index: int, on: bool) -> None:
        # IFLA_BRPORT_MODE is the hairpin flag, in the bridge family's IFLA_PROTINFO.
        mode = _attr(_IFLA_BRPORT_MODE, bytes([1 if on else 0]))
        protinfo = _attr(_IFLA_PROTINFO | _NLA_F_NESTED, mode)
        _setlink(_IFINFOMSG.pack(_AF_BRIDGE, 0, index, 0, 0) + protinfo)

    # -- addresses ---------------------------------------------------------

    def addresses(self, index: int, family: int | None = None) -> list[IPInterface]:
        return addresses_of(index, family or 0)

    def add_address(self, index: int, iface: IPInterface, nodad: bool = False) -> None:
        family = AF_INET if iface.version == 4 else AF_INET6
        flags = IFA_F_NODAD if nodad and iface.version == 6 else 0
        body = _IFADDRMSG.pack(family, iface.network.prefixlen, flags, 0, index)
        body += _attr(_IFA_LOCAL, iface.ip.packed) + _attr(_IFA_ADDRESS, iface.ip.packed)
        if iface.version == 4:
            body += _attr(_IFA_BROADCAST, iface.network.broadcast_address.packed)
        _rtnl(_RTM_NEWADDR, body, dump=False, ack=True, create=True)

    def delete_address(self, index: int, iface: IPInterface) -> None:
        _call(
            lambda: self._ipr.addr(
                "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
            )
        )

    # -- routes ------------------------------------------------------------

    def add_route(self, dst: IPNetwork, gateway: IPAddress | None, oif: int) -> None:
        """A static unicast route in the main table, scope global (as pyroute2 made them)."""
        family = AF_INET if dst.version == 4 else AF_INET6
        body = _RTMSG.pack(family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, _RTPROT_STATIC, 0, 1, 0)
        body += _attr(_RTA_DST, dst.network_address.packed) + _attr(_RTA_OIF, _u32(oif))
        if gateway is not None:
            body += _attr(_RTA_GATEWAY, gateway.packed)
        _rtnl(_RTM_NEWROUTE, body, dump=False, ack=True, create=True)

    def routes(self, family: int) -> list[RouteEntry]:
        msgs = _call(lambda: self._ipr.get_routes(family=family, table=RT_TABLE_MAIN))
        out: list[RouteEntry] = []
        zero = "0.0.0.0" if family == AF_INET else "::"
        for msg in msgs:
            dst = msg.get("RTA_DST") or zero
            gw = msg.get("RTA_GATEWAY")
            out.append(
                RouteEntry(
                    dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False),
                    gateway=ipaddress.ip_address(gw) if gw else None,
                    oif=int(msg.get("RTA_OIF") or 0),
                    table=int(msg.get("RTA_TABLE") or msg["table"]),
                )
            )
        return out

    def route_get(self, dst: IPAddress) -> tuple[int, IPAddress | None] | None:
        """(oif, gateway) the kernel would use to reach `dst` (ip route get)."""
        try:
            msgs = _call(lambda: self._ipr.route("get", dst=str(dst)))
        except OSError:
            return None
        for msg in msgs:
            oif = msg.get("RTA_OIF")
            if oif:
                gw = msg.get("RTA_GATEWAY")
                return int(oif), ipaddress.ip_address(gw) if gw else None
        return None


# -- bare rtnetlink ----------------------------------------------------------------
# pyroute2 decodes every attribute of a link (stats, per-family data...) in Python and drives an
# asyncio loop per call: a link lookup costs ~2 ms, a filtered dump ~10 ms, a write 1-2 ms,
# where the kernel answers in ~0.1 ms.

_NETLINK_ROUTE = 0
_RTM_DELLINK, _RTM_GETLINK, _RTM_GETADDR = 17, 18, 22
_IFA_ADDRESS, _IFA_LOCAL, _IFA_BROADCAST = 1, 2, 4
_RTM_NEWLINK, _RTM_SETLINK, _RTM_NEWADDR, _RTM_NEWROUTE = 16, 19, 20, 24
_IFLA_NET_NS_FD, _IFLA_INFO_DATA, _VETH_INFO_PEER = 28, 2, 1
_NLM_F_EXCL, _NLM_F_CREATE = 0x200, 0x400
_AF_BRIDGE = 7
_IFLA_PROTINFO, _IFLA_BRPORT_MODE, _NLA_F_NESTED = 12, 4, 0x8000
_RTA_DST, _RTA_OIF, _RTA_GATEWAY = 1, 4, 5
_RTPROT_STATIC = 4
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_DUMP = 0x1, 0x4, 0x300
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_LINK = 1, 3, 4, 5
_IFLA_MASTER, _IFLA_OPERSTATE, _IFLA_LINKINFO, _IFLA_EXT_MASK = 10, 16, 18, 29
_IFLA_INFO_KIND = 1
_RTEXT_FILTER_SKIP_STATS = 1 << 3
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
_NLMSG_HDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change


def _attr(kind: int, payload: bytes) -> bytes:
    data = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out.setdefault(kind & 0x3FFF, data[offset + _RTATTR.size : offset + length])
        offset += (length + 3) & ~3
    return out


def _rtnl(
    msg_type: int,
    body: bytes,
    dump: bool,
    ack: bool = False,
    create: bool = False,
    enodev_ok: bool = True,
) -> list[bytes]:
    """One rtnetlink request in the calling thread's netns; the payloads of the answer's
    messages (none for an acknowledged change). ENODEV is an empty answer if enodev_ok;
    `create` makes a new object and fails with EEXIST on an existing one."""
    flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0) | (_NLM_F_ACK if ack else 0)
    if create:
        flags |= _NLM_F_CREATE | _NLM_F_EXCL
        enodev_ok = False
    header = _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), msg_type, flags, 1, 0)
    out: list[bytes] = []
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE
    ) as sock:
        sock.bind((0, 0))
        sock.send(header + body)
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
                if length < _NLMSG_HDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink message")
                payload = data[offset + _NLMSG_HDR.size : offset + length]
                offset += (length + 3) & ~3
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", payload)
                    if error == -errno.ENODEV and enodev_ok:
                        return []
                    if error:
                        raise OSError(-error, os_strerror(-error))
                    return out
                out.append(payload)
            if not dump and out:
                return out


def _u32(value: int) -> bytes:
    return struct.pack("=I", value)


def _setlink(body: bytes) -> None:
    """Change an existing link; a missing one is an error (ENODEV), as with pyroute2."""
    _rtnl(_RTM_SETLINK, body, dump=False, ack=True, enodev_ok=False)


def _rtnl_links(index: int, attrs: bytes, dump: bool) -> list[Link]:
    """RTM_GETLINK: one link (by index, or by an IFLA_IFNAME in attrs), or a dump the kernel
    filters by attrs."""
    body = _IFINFOMSG.pack(0, 0, index, 0, 0) + attrs
    body += _attr(_IFLA_EXT_MASK, struct.pack("=I", _RTEXT_FILTER_SKIP_STATS))
    return [_parse_link(p) for p in _rtnl(_RTM_GETLINK, body, dump)]


def addresses_of(index: int, family: int = 0) -> list[IPInterface]:
    """The addresses of link `index` (of one family, or all), in the calling thread's netns."""
    found: list[IPInterface] = []
    for payload in _rtnl(_RTM_GETADDR, _IFADDRMSG.pack(family, 0, 0, 0, 0), dump=True):
        fam, prefixlen, _flags, _scope, link = _IFADDRMSG.unpack_from(payload)
        if link != index or (family and fam != family):
            continue
        attrs = _attrs(payload[_IFADDRMSG.size :])
        raw = attrs.get(_IFA_ADDRESS) or attrs.get(_IFA_LOCAL)
        if raw is None or fam not in (AF_INET, AF_INET6):
            continue
        ip = ipaddress.IPv4Address(raw) if fam == AF_INET else ipaddress.IPv6Address(raw)
        found.append(ipaddress.ip_interface(f"{ip}/{prefixlen}"))
    return found


def _parse_link(payload: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    attrs = _attrs(payload[_IFINFOMSG.size :])

    def u32(kind: int) -> int:
        value = attrs.get(kind)
        return int(struct.unpack_from("=I", value)[0]) if value and len(value) >= 4 else 0

    kind = _attrs(attrs.get(_IFLA_LINKINFO, b"")).get(_IFLA_INFO_KIND, b"")
    operstate = attrs.get(_IFLA_OPERSTATE, b"\0")[0]
    return Link(
        index=index,
        name=attrs.get(_IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace"),
        kind=kind.split(b"\0", 1)[0].decode(errors="replace"),
        mac=":".join(f"{b:02x}" for b in attrs.get(_IFLA_ADDRESS, b"")),
        mtu=u32(_IFLA_MTU),
        flags=flags,
        master=u32(_IFLA_MASTER),
        peer_index=u32(_IFLA_LINK),
        operstate=_OPERSTATES[operstate] if operstate < len(_OPERSTATES) else "UNKNOWN",
    )


def delete_link_by_name(name: str) -> None:
    """Delete a link (a veth takes its peer along) in the calling thread's netns; one that is
    not there is fine."""
    body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr(_IFLA_IFNAME, name.encode() + b"\0")
    _rtnl(_RTM_DELLINK, body, dump=False, ack=True)


def link_by_name(name: str) -> Link | None:
    """The link called `name` in the calling thread's netns, or None."""
    found = _rtnl_links(0, _attr(_IFLA_IFNAME, name.encode() + b"\0"), dump=False)
    return found[0] if found else None


def link_by_index(index: int) -> Link | None:
    found = _rtnl_links(index, b"", dump=False)
    return found[0] if found else None


def port_names(master: int, exclude: str = "") -> list[str]:
    """Names of the links enslaved to `master` (a bridge's ports) in the calling thread's netns:
    one dump the kernel filters on IFLA_MASTER (checked again here, should a kernel ignore the
    filter and send every link)."""
    links = _rtnl_links(0, _attr(_IFLA_MASTER, struct.pack("=I", master)), dump=True)
    return [link.name for link in links if link.master == master and link.name != exclude]


_NETLINK_NETFILTER = 12
_NFT_MSG_GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN
_NFTA_GEN_ID = 1


def nftables_generation() -> int | None:
    """The nftables ruleset generation of the calling thread's netns: the kernel bumps it on
    every ruleset change (iptables-nft included), so an unchanged number means an unchanged
    ruleset. None where nftables cannot answer."""
    body = struct.pack("=BBH", 0, 0, 0)  # nfgenmsg: AF_UNSPEC, NFNETLINK_V0
    header = _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _NFT_MSG_GETGEN, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_NETFILTER
        ) as sock:
            sock.bind((0, 0))
            sock.send(header + body)
            data = sock.recv(1 << 12)
    except OSError:
        return None
    if len(data) < _NLMSG_HDR.size + 4:
        return None
    length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data)
    if kind == _NLMSG_ERROR:
        return None
    gen = _attrs(data[_NLMSG_HDR.size + 4 : length]).get(_NFTA_GEN_ID)
    return int.from_bytes(gen[:4], "big") if gen and len(gen) >= 4 else None

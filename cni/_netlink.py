"""A small typed facade over pyroute2's IPRoute.

pyroute2 is untyped and its import costs ~0.25 s, so it is imported here only,
on first use; modules that never touch links (host-local, portmap's iptables
side) never pay for it. One `Netlink()` talks to the netns of the thread that
created it (see cni._ns), and must be closed.

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


def _to_link(msg: Any) -> Link:
    linkinfo = msg.get("IFLA_LINKINFO")
    kind = linkinfo.get("IFLA_INFO_KIND") if linkinfo is not None else None
    return Link(
        index=int(msg["index"]),
        name=str(msg.get("IFLA_IFNAME")),
        kind=str(kind or ""),
        mac=str(msg.get("IFLA_ADDRESS") or ""),
        mtu=int(msg.get("IFLA_MTU") or 0),
        flags=int(msg["flags"]),
        master=int(msg.get("IFLA_MASTER") or 0),
        peer_index=int(msg.get("IFLA_LINK") or 0),
        operstate=str(msg.get("IFLA_OPERSTATE") or ""),
    )


def preload() -> None:
    """Import pyroute2 now, for a long-lived caller that would rather not pay it in a request."""
    import importlib

    importlib.import_module("pyroute2")
    _netlink_error()


class Netlink:
    def __init__(self) -> None:
        from pyroute2 import IPRoute  # type: ignore[import-untyped]

        self._ipr: Any = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- links -------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        try:
            msgs = _call(lambda: self._ipr.link("get", ifname=name))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return _to_link(msgs[0])

    def link_by_index(self, index: int) -> Link | None:
        try:
            msgs = _call(lambda: self._ipr.link("get", index=index))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return _to_link(msgs[0])

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
        peer: dict[str, Any] = {"ifname": peer_name, "net_ns_fd": peer_netns_fd}
        kwargs: dict[str, Any] = {"ifname": name, "kind": "veth", "peer": peer}
        if mtu:
            kwargs["mtu"] = mtu
            peer["mtu"] = mtu
        if peer_mac:
            peer["address"] = peer_mac
        _call(lambda: self._ipr.link("add", **kwargs))

    def delete_link(self, index: int) -> None:
        _call(lambda: self._ipr.link("del", index=index))

    def set_up(self, index: int) -> None:
        _call(lambda: self._ipr.link("set", index=index, state="up"))

    def set_down(self, index: int) -> None:
        _call(lambda: self._ipr.link("set", index=index, state="down"))

    def set_master(self, index: int, master: int) -> None:
        _call(lambda: self._ipr.link("set", index=index, master=master))

    def set_mac(self, index: int, mac: str) -> None:
        _call(lambda: self._ipr.link("set", index=index, address=mac))

    def set_promisc(self, index: int, on: bool) -> None:
        flags = IFF_PROMISC if on else 0
        _call(lambda: self._ipr.link("set", index=index, flags=flags, change=IFF_PROMISC))

    def set_hairpin(self, index: int, on: bool) -> None:
        # IFLA_BRPORT_MODE (pyroute2 calls it "mode") is the hairpin flag.
        _call(lambda: self._ipr.brport("set", index=index, mode=1 if on else 0))

    # -- addresses ---------------------------------------------------------

    def addresses(self, index: int, family: int | None = None) -> list[IPInterface]:
        kwargs: dict[str, Any] = {"index": index}
        if family is not None:
            kwargs["family"] = family
        msgs = _call(lambda: self._ipr.get_addr(**kwargs))
        out: list[IPInterface] = []
        for msg in msgs:
            addr = msg.get("IFA_ADDRESS")
            if addr:
                out.append(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
        return out

    def add_address(self, index: int, iface: IPInterface, nodad: bool = False) -> None:
        kwargs: dict[str, Any] = {
            "index": index,
            "address": str(iface.ip),
            "prefixlen": iface.network.prefixlen,
        }
        if iface.version == 4:
            kwargs["broadcast"] = str(iface.network.broadcast_address)
        elif nodad:
            kwargs["flags"] = IFA_F_NODAD
        _call(lambda: self._ipr.addr("add", **kwargs))

    def delete_address(self, index: int, iface: IPInterface) -> None:
        _call(
            lambda: self._ipr.addr(
                "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
            )
        )

    # -- routes ------------------------------------------------------------

    def add_route(self, dst: IPNetwork, gateway: IPAddress | None, oif: int) -> None:
        kwargs: dict[str, Any] = {"dst": str(dst), "oif": oif}
        if gateway is not None:
            kwargs["gateway"] = str(gateway)
        _call(lambda: self._ipr.route("add", **kwargs))

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


# -- a bare netlink query -------------------------------------------------------

_NETLINK_ROUTE = 0
_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFLA_IFNAME, _IFLA_MASTER = 3, 10
_NLMSG_HDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
_IFINFOMSG_LEN = 16


def port_names(master: int, exclude: str = "") -> list[str]:
    """Names of the links enslaved to `master` (a bridge's ports) in the calling thread's netns.

    One RTM_GETLINK dump that the kernel filters on IFLA_MASTER, read with struct: pyroute2
    decodes every attribute of every link and takes ~10 ms for what costs the kernel ~0.1 ms,
    on the DEL path of every pod.
    """
    request = (
        struct.pack("=BxHiII", 0, 0, 0, 0, 0)  # ifinfomsg, AF_UNSPEC
        + _RTATTR.pack(8, _IFLA_MASTER)
        + struct.pack("=I", master)
    )
    header = _NLMSG_HDR.pack(
        _NLMSG_HDR.size + len(request), _RTM_GETLINK, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
    )
    names: list[str] = []
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE
    ) as sock:
        sock.bind((0, 0))
        sock.send(header + request)
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
                if kind == _NLMSG_DONE:
                    return names
                if kind == _NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, offset + _NLMSG_HDR.size)
                    if error:
                        raise OSError(-error, os_strerror(-error))
                elif kind == _RTM_NEWLINK:
                    name, link_master = _name_and_master(
                        data[offset + _NLMSG_HDR.size + _IFINFOMSG_LEN : offset + length]
                    )
                    # Checked here too: a kernel that ignores the filter sends every link.
                    if link_master == master and name != exclude:
                        names.append(name)
                if length < _NLMSG_HDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink message")
                offset += (length + 3) & ~3


def _name_and_master(attrs: bytes) -> tuple[str, int]:
    name, master, offset = "", 0, 0
    while offset + _RTATTR.size <= len(attrs):
        length, kind = _RTATTR.unpack_from(attrs, offset)
        if length < _RTATTR.size:
            break
        value = attrs[offset + _RTATTR.size : offset + length]
        if kind == _IFLA_IFNAME:
            name = value.split(b"\0", 1)[0].decode(errors="replace")
        elif kind == _IFLA_MASTER:
            (master,) = struct.unpack_from("=I", value)
        offset += (length + 3) & ~3
    return name, master

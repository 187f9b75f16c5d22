"""loopback: bring `lo` up in the container netns (reference `loopback`)."""

from __future__ import annotations

import contextlib

from cni._netlink import AF_INET, AF_INET6, Netlink
from cni._ns import NetnsGoneError, NotANetnsError, run_in_netns
from cni._skel import CmdArgs, Plugin, main_for
from cni._types import Interface as ResultInterface
from cni._types import IPConfig, IPInterface, Result
from cni.errors import CNIError, ErrorCode

PLUGIN_TYPE = "criruntime-loopback"
LO = "lo"


def _lo_up() -> tuple[list[IPInterface], list[IPInterface]]:
    with Netlink() as nl:
        lo = nl.link(LO)
        if lo is None:
            raise CNIError(ErrorCode.INTERNAL, "no loopback interface in netns")
        nl.set_up(lo.index)
        v4 = nl.addresses(lo.index, AF_INET)
        v6 = nl.addresses(lo.index, AF_INET6)
    for addr in v4 + v6:
        if not addr.ip.is_loopback:
            raise CNIError(
                ErrorCode.INTERNAL, f"loopback interface found with non-loopback address {addr.ip}"
            )
    return v4, v6


def cmd_add(args: CmdArgs) -> Result:
    prev = args.prev_result()
    v4, v6 = run_in_netns(args.netns, _lo_up)
    if prev is not None:
        # Chained after something else: pass its result through unchanged.
        return prev
    result = Result(
        interfaces=[ResultInterface(name=LO, mac="00:00:00:00:00:00", sandbox=args.netns)]
    )
    for addrs in (v4, v6):
        if addrs:
            result.ips.append(IPConfig(address=addrs[0], interface=0))
    return result


def _lo_down() -> None:
    with Netlink() as nl:
        lo = nl.link(LO)
        if lo is not None:
            nl.set_down(lo.index)


def cmd_del(args: CmdArgs) -> None:
    if not args.netns:
        return
    # DEL is idempotent: a namespace that is gone has no lo to take down.
    with contextlib.suppress(NetnsGoneError, NotANetnsError):
        run_in_netns(args.netns, _lo_down)


def _lo_is_up() -> bool:
    with Netlink() as nl:
        lo = nl.link(LO)
        return lo is not None and lo.is_up


def cmd_check(args: CmdArgs) -> None:
    if not run_in_netns(args.netns, _lo_is_up):
        raise CNIError(ErrorCode.INTERNAL, "loopback interface is down")


PLUGIN = Plugin(name=PLUGIN_TYPE, add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    main_for(PLUGIN_TYPE)


if __name__ == "__main__":
    main()

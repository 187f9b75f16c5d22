"""portmap: hostPort -> pod DNAT with iptables (reference `portmap`).

Chains and rules are those of the reference plugin (iptables backend), so
the two interoperate and share the top-level chains:

    PREROUTING, OUTPUT:   -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
    CNI-HOSTPORT-DNAT:    -m comment .. -m multiport -p tcp --destination-ports 80 -j CNI-DN-<h>
    CNI-DN-<h>:           -p tcp --dport 80 [-d hostIP] -s <podSubnet> -j CNI-HOSTPORT-SETMARK
                          -p tcp --dport 80 [-d hostIP] -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK
                          -p tcp --dport 80 [-d hostIP] -j DNAT --to-destination <podIP>:8080
    CNI-HOSTPORT-SETMARK: -j MARK --set-xmark 0x2000/0x2000
    POSTROUTING (first):  -j CNI-HOSTPORT-MASQ
    CNI-HOSTPORT-MASQ:    -m mark --mark 0x2000/0x2000 -j MASQUERADE

(the SETMARK rules catch hairpin traffic from the pod subnet and, for IPv4,
connections from 127.0.0.1 on the node),

plus net.ipv4.conf.<bridge>.route_localnet=1 so 127.0.0.1 may be routed to
the pod. CNI-DN-<hash> is per (network, container) and goes away on DEL.

Unlike the reference plugin, ADD refuses a host port that another
container's CNI-DN-* chain already maps (same protocol, overlapping host IP):
the reference silently installs a second, shadowed rule.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cni._ipmasq import format_chain_name
from cni._iptables import IPTables, Snapshot
from cni._skel import CmdArgs, Plugin, main_for
from cni._sysctl import write_sysctl
from cni._types import IPInterface, Result
from cni.errors import CNIError, ErrorCode

PLUGIN_TYPE = "criruntime-portmap"

TOP_DNAT_CHAIN = "CNI-HOSTPORT-DNAT"
SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK"
MASQ_CHAIN = "CNI-HOSTPORT-MASQ"
DNAT_PREFIX = "CNI-DN-"
DEFAULT_MARK_BIT = 13
# Serialises "is this host port free?" with "take it" across processes.
LOCK_PATH = "/run/criruntime-cni-portmap.lock"


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str
    host_ip: str

    def host_addr(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        return ipaddress.ip_address(self.host_ip) if self.host_ip else None


@dataclass
class PortMapConf:
    name: str
    snat: bool
    mark_bit: int
    external_setmark: str
    conditions_v4: list[str]
    conditions_v6: list[str]
    masq_all: bool
    mappings: list[PortMapping]
    # runtimeConfig.portMappings was passed (maybe empty): DEL knows what there is to undo.
    mappings_given: bool


def _conditions(conf: dict[str, Any], key: str) -> list[str]:
    value = conf.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{key} must be a list of strings")
    if value and value[0] and value[0][0] not in "-!":
        raise CNIError(
            ErrorCode.UNSUPPORTED_FIELD, f"{key}: only iptables conditions are supported"
        )
    return list(value)


def load_conf(args: CmdArgs) -> PortMapConf:
    conf = args.netconf
    backend = conf.get("backend")
    if backend not in (None, "iptables"):
        raise CNIError(ErrorCode.UNSUPPORTED_FIELD, f"portmap backend {backend!r} is not supported")
    snat = conf.get("snat")
    snat = True if snat is None else snat
    if not isinstance(snat, bool):
        raise CNIError(ErrorCode.DECODING_FAILURE, "snat must be a boolean")
    mark_bit = conf.get("markMasqBit")
    external = conf.get("externalSetMarkChain")
    if mark_bit is not None and external is not None:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, "Cannot specify externalSetMarkChain and markMasqBit"
        )
    if mark_bit is None:
        mark_bit = DEFAULT_MARK_BIT
    if not isinstance(mark_bit, int) or not 0 <= mark_bit <= 31:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "MasqMarkBit must be between 0 and 31")
    mappings: list[PortMapping] = []
    raw = args.runtime_config.get("portMappings") or []
    if not isinstance(raw, list):
        raise CNIError(ErrorCode.DECODING_FAILURE, "runtimeConfig.portMappings must be a list")
    for pm in raw:
        if not isinstance(pm, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, "invalid portMappings entry")
        host_port, cont_port = pm.get("hostPort"), pm.get("containerPort")
        if not isinstance(cont_port, int) or not 0 < cont_port <= 65535:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"Invalid container port number: {cont_port}"
            )
        if not isinstance(host_port, int) or not 0 < host_port <= 65535:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"Invalid host port number: {host_port}"
            )
        proto = str(pm.get("protocol") or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"Invalid protocol {proto!r}")
        host_ip = str(pm.get("hostIP") or "")
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError as exc:
                raise CNIError(
                    ErrorCode.INVALID_NETWORK_CONFIG, f"Invalid hostIP {host_ip!r}"
                ) from exc
        mappings.append(PortMapping(host_port, cont_port, proto, host_ip))
    masq_all = conf.get("masqAll", False)
    return PortMapConf(
        name=args.name,
        snat=snat,
        mark_bit=mark_bit,
        external_setmark=str(external or ""),
        conditions_v4=_conditions(conf, "conditionsV4"),
        conditions_v6=_conditions(conf, "conditionsV6"),
        masq_all=bool(masq_all),
        mappings=mappings,
        mappings_given=args.runtime_config.get("portMappings") is not None,
    )


def container_ips(prev: Result, ifname: str) -> dict[int, IPInterface]:
    """The first IPv4 and IPv6 address of the container interface (reference parseConfig)."""
    out: dict[int, IPInterface] = {}
    for ipc in prev.ips:
        fam = ipc.address.version
        if fam in out:
            continue
        if ipc.interface is not None and 0 <= ipc.interface < len(prev.interfaces):
            iface = prev.interfaces[ipc.interface]
            if iface.name != ifname or not iface.sandbox:
                continue
        out[fam] = ipc.address
    return out


def _comment(name: str, container_id: str) -> str:
    c = f'dnat name: "{name}" id: "{container_id}"'
    return c if len(c) <= 255 else c[:253] + "..."


def _ip_port(addr: IPInterface, port: int) -> str:
    return f"{addr.ip}:{port}" if addr.version == 4 else f"[{addr.ip}]:{port}"


def _mark(bit: int) -> str:
    value = 1 << bit
    return f"{value:#x}/{value:#x}"


def dnat_chain_name(name: str, container_id: str) -> str:
    return format_chain_name(name, container_id, "DN-")


def _entry_rules(conf: PortMapConf, container_id: str, version: int) -> list[list[str]]:
    """The CNI-HOSTPORT-DNAT rules that jump to this container's chain."""
    comment = _comment(conf.name, container_id)
    by_proto: dict[str, list[int]] = {}
    for pm in conf.mappings:
        by_proto.setdefault(pm.protocol, []).append(pm.host_port)
    extra = conf.conditions_v6 if version == 6 else conf.conditions_v4
    rules: list[list[str]] = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        # multiport takes at most 15 ports per rule.
        for i in range(0, len(ports), 15):
            spec = ",".join(str(p) for p in ports[i : i + 15])
            rules.append(
                [
                    "-m",
                    "comment",
                    "--comment",
                    comment,
                    "-m",
                    "multiport",
                    "-p",
                    proto,
                    "--destination-ports",
                    spec,
                    *extra,
                ]
            )
    return rules


def _dnat_rules(conf: PortMapConf, addr: IPInterface) -> list[list[str]]:
    setmark = conf.external_setmark or SETMARK_CHAIN
    rules: list[list[str]] = []
    for pm in conf.mappings:
        base = ["-p", pm.protocol, "--dport", str(pm.host_port)]
        host = pm.host_addr()
        if host is not None:
            if host.version != addr.version:
                continue  # a hostIP of the other family: not for this table
            if not host.is_unspecified:
                base += ["-d", pm.host_ip]
        if conf.snat:
            masq_cidr = str(addr.network)
            if conf.masq_all:
                masq_cidr = "0.0.0.0/0" if addr.version == 4 else "::/0"
            rules.append([*base, "-s", masq_cidr, "-j", setmark])  # hairpin
            if addr.version == 4 and not conf.masq_all:
                rules.append([*base, "-s", "127.0.0.1", "-j", setmark])  # from localhost
        rules.append([*base, "-j", "DNAT", "--to-destination", _ip_port(addr, pm.container_port)])
    return rules


@contextmanager
def _portmap_lock() -> Iterator[None]:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Taken:
    chain: str
    protocol: str
    port: int
    host_ip: str  # "" = any address


def _parse_taken(snap: Snapshot) -> list[_Taken]:
    """Host ports mapped by CNI-DN-* chains."""
    out: list[_Taken] = []
    for chain, rule in ((c, r) for c, rules in snap.rules.items() for r in rules):
        if not chain.startswith(DNAT_PREFIX):
            continue
        words = ["-A", chain, *rule]
        opts: dict[str, str] = {}
        negated = False
        for i, w in enumerate(words[2:-1], start=2):
            if w == "!":
                negated = True
                continue
            if w.startswith("-") and not negated:
                opts.setdefault(w, words[i + 1])
            negated = False
        if opts.get("-j") != "DNAT" or "--dport" not in opts:
            continue
        try:
            port = int(opts["--dport"])
        except ValueError:
            continue
        host_ip = opts.get("-d", "")
        if host_ip:
            host_ip = str(ipaddress.ip_network(host_ip, strict=False).network_address)
        out.append(_Taken(words[1], opts.get("-p", ""), port, host_ip))
    return out


def _find_clash(snap: Snapshot, conf: PortMapConf, my_chain: str, version: int) -> str | None:
    taken = [t for t in _parse_taken(snap) if t.chain != my_chain]
    if not taken:
        return None
    owners = _chain_owners(snap)
    for pm in conf.mappings:
        host = pm.host_addr()
        if host is not None and host.version != version:
            continue
        want = "" if host is None or host.is_unspecified else str(host)
        for t in taken:
            if t.protocol != pm.protocol or t.port != pm.host_port:
                continue
            if want and t.host_ip and want != t.host_ip:
                continue
            owner = owners.get(t.chain, t.chain)
            where = want or "all addresses"
            return (
                f"host port {pm.host_port}/{pm.protocol} on {where} is already mapped "
                f"to another container ({owner})"
            )
    return None


def _chain_owners(snap: Snapshot) -> dict[str, str]:
    """CNI-DN-* chain -> the comment of its entry rule (network name and container ID)."""
    owners: dict[str, str] = {}
    for words in snap.rules.get(TOP_DNAT_CHAIN, []):
        if "-j" in words and "--comment" in words:
            target = words[words.index("-j") + 1] if words.index("-j") + 1 < len(words) else ""
            owners.setdefault(target, words[words.index("--comment") + 1])
    return owners


def _shared_chain_commands(snap: Snapshot, conf: PortMapConf) -> list[list[str]]:
    """What is missing of the chains all containers share (rules as iptables-save spells them,
    so they compare word for word)."""
    cmds: list[list[str]] = []

    def ensure(chain: str, rule: list[str], first: bool = False) -> None:
        if chain not in snap.chains:
            cmds.append([f":{chain}", "-", "[0:0]"])
            snap.chains.add(chain)
        if not snap.has(chain, rule):
            cmds.append(["-I", chain, "1", *rule] if first else ["-A", chain, *rule])
            snap.rules.setdefault(chain, []).append(rule)

    if conf.snat and not conf.external_setmark:
        mark = _mark(conf.mark_bit)
        comment = ["-m", "comment", "--comment", "CNI portfwd masquerade mark"]
        ensure(SETMARK_CHAIN, [*comment, "-j", "MARK", "--set-xmark", mark])
        ensure(MASQ_CHAIN, ["-m", "mark", "--mark", mark, "-j", "MASQUERADE"])
        # First in POSTROUTING, or bridge's ipMasq rules would take the packet.
        comment = ["-m", "comment", "--comment", "CNI portfwd requiring masquerade"]
        ensure("POSTROUTING", [*comment, "-j", MASQ_CHAIN], first=True)
    if TOP_DNAT_CHAIN not in snap.chains:
        cmds.append([f":{TOP_DNAT_CHAIN}", "-", "[0:0]"])
        snap.chains.add(TOP_DNAT_CHAIN)
    for entry in ("PREROUTING", "OUTPUT"):
        ensure(entry, ["-m", "addrtype", "--dst-type", "LOCAL", "-j", TOP_DNAT_CHAIN])
    return cmds


def _teardown_commands(snap: Snapshot, chain: str) -> list[list[str]]:
    if chain not in snap.chains:
        return []
    refs = [["-D", TOP_DNAT_CHAIN, *r] for r in snap.jumps_to(TOP_DNAT_CHAIN, chain)]
    return [*refs, ["-F", chain], ["-X", chain]]


def _forward(conf: PortMapConf, container_id: str, addr: IPInterface) -> None:
    """One iptables-save to see what is there, one restore transaction for the rest."""
    ipt = IPTables(addr.version)
    chain = dnat_chain_name(conf.name, container_id)
    snap = ipt.save("nat")
    clash = _find_clash(snap, conf, chain, addr.version)
    if clash:
        raise CNIError(ErrorCode.HOST_PORT_IN_USE, clash)
    cmds = _shared_chain_commands(snap, conf)
    # This container's chain from scratch (idempotent re-ADD): its old entry rules go, and
    # declaring the chain makes it or empties it.
    cmds += [["-D", TOP_DNAT_CHAIN, *r] for r in snap.jumps_to(TOP_DNAT_CHAIN, chain)]
    cmds.append([f":{chain}", "-", "[0:0]"])
    cmds += [["-A", chain, *rule] for rule in _dnat_rules(conf, addr)]
    for rule in _entry_rules(conf, container_id, addr.version):
        cmds.append(["-A", TOP_DNAT_CHAIN, *rule, "-j", chain])
    ipt.restore("nat", cmds)


def _enable_route_localnet(addr: IPInterface) -> None:
    """route_localnet on the interface that leads to the pod, so a packet from
    127.0.0.1 DNAT'ed in OUTPUT may leave through it (it is then masqueraded).

    Only when the pod is on-link there (the bridge). The reference plugin
    takes whatever `ip route get` says, so with no route to the pod yet it
    flips route_localnet on the host's uplink (via its default gateway).
    """
    from cni._netlink import Netlink

    with Netlink() as nl:
        route = nl.route_get(addr.ip)
        link = nl.link_by_index(route[0]) if route is not None and route[1] is None else None
    if link is not None and link.name != "lo":
        write_sysctl(f"net/ipv4/conf/{link.name}/route_localnet", "1")


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    prev = args.prev_result()
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "must be called as chained plugin")
    if not conf.mappings:
        return prev
    addrs = container_ips(prev, args.ifname)
    with _portmap_lock():
        try:
            for version in sorted(addrs):
                _forward(conf, args.container_id, addrs[version])
        except BaseException:
            _unforward(conf, args.container_id)
            raise
    if conf.snat and 4 in addrs:
        _enable_route_localnet(addrs[4])
    return prev


def _unforward(conf: PortMapConf, container_id: str, versions: tuple[int, ...] = (4, 6)) -> None:
    chain = dnat_chain_name(conf.name, container_id)
    for version in versions:
        try:
            ipt = IPTables(version)
        except CNIError:
            continue
        snap = ipt.save("nat")
        # The second chain is that of very old reference versions; usually absent.
        old = format_chain_name(conf.name, container_id, "SN-")
        ipt.restore("nat", _teardown_commands(snap, chain) + _teardown_commands(snap, old))


def cmd_del(args: CmdArgs) -> None:
    conf = load_conf(args)
    if conf.mappings_given and not conf.mappings:
        return  # the runtime says there were none: nothing of this container's to find
    # Unlike the reference we tear down even without runtimeConfig: the chain name depends
    # only on network name and container ID.
    prev = args.prev_result() if conf.mappings_given else None
    versions = tuple(sorted(container_ips(prev, args.ifname))) if prev is not None else (4, 6)
    _unforward(conf, args.container_id, versions or (4, 6))


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev = args.prev_result()
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Required prevResult missing")
    if not conf.mappings:
        return
    chain = dnat_chain_name(conf.name, args.container_id)
    for version, addr in sorted(container_ips(prev, args.ifname).items()):
        ipt = IPTables(version)
        if not ipt.chain_exists("nat", chain):
            raise CNIError(ErrorCode.INTERNAL, f"chain {chain} not found in iptables table nat")
        for rule in _dnat_rules(conf, addr):
            if not ipt.exists("nat", chain, rule):
                raise CNIError(
                    ErrorCode.INTERNAL, f"rule {shlex.join(rule)} in chain {chain} not found"
                )
        for rule in _entry_rules(conf, args.container_id, version):
            if not ipt.exists("nat", TOP_DNAT_CHAIN, [*rule, "-j", chain]):
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"rule {shlex.join(rule)} in chain {TOP_DNAT_CHAIN} not found",
                )


PLUGIN = Plugin(name=PLUGIN_TYPE, add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    main_for(PLUGIN_TYPE)


if __name__ == "__main__":
    main()

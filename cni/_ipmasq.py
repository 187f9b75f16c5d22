"""ipMasq: rules that belong to the network, not to each pod.

For each pod subnet of a network, in the nat table:

    POSTROUTING:      -s <subnet> -m comment --comment <c> -j CNI-MASQ-<hash>
    CNI-MASQ-<hash>:  -d <subnet> -m comment --comment <c> -j ACCEPT
                      ! -d 224.0.0.0/4 -m comment --comment <c> -j MASQUERADE

with c = 'name: "<network>" subnet: "<subnet>"' and the hash over (network, subnet). Traffic
from the subnet to the subnet stays as it is, to anywhere else (but multicast) it is
masqueraded: the reference plugin's meaning, whose per-pod chain (-s <podIP> -j CNI-<hash of
network+container>) costs a pod seven iptables execs on ADD and six on DEL.

ADD checks the rules with one iptables-save and writes what is missing in one iptables-restore
transaction (the first pod only). DEL costs nothing until the bridge has no port left; that
DEL removes the network's rules, and any per-pod chains the reference plugin left for this
network, again in one save and one restore per family. A file lock orders the check of ADD
(which runs after its veth is on the bridge) before the port count of a last DEL.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from cni._iptables import IPTables, Snapshot
from cni._netlink import nftables_generation
from cni._types import IPNetwork
from cni.errors import CNIError

_MAX_CHAIN = 28  # iptables chain names must stay below 29 characters
LOCK_PATH = "/run/criruntime-cni-ipmasq.lock"
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}


def format_chain_name(network: str, container_id: str, prefix: str = "") -> str:
    """utils.MustFormatChainNameWithPrefix: "CNI-"+prefix+sha512 hex, 28 chars."""
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return ("CNI-" + prefix + digest)[:_MAX_CHAIN]


def masq_chain(network: str, subnet: IPNetwork) -> str:
    return format_chain_name(network, str(subnet), "MASQ-")


def _network_comment(network: str, subnet: IPNetwork) -> list[str]:
    return ["-m", "comment", "--comment", f'name: "{network}" subnet: "{subnet}"']


def _owned_by(rule: list[str], network: str) -> bool:
    """Ours or the reference plugin's ipMasq rule for this network (not portmap's "dnat ...")."""
    if "--comment" not in rule[:-1]:
        return False
    return rule[rule.index("--comment") + 1].startswith(f'name: "{network}" ')


@contextmanager
def _locked(mode: int) -> Iterator[int]:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


def _missing(snap: Snapshot, network: str, subnet: IPNetwork, version: int) -> list[list[str]]:
    """The restore commands that complete this subnet's rules ([] when they are all there)."""
    chain = masq_chain(network, subnet)
    comment = _network_comment(network, subnet)
    body = [
        ["-d", str(subnet), *comment, "-j", "ACCEPT"],
        ["!", "-d", MULTICAST[version], *comment, "-j", "MASQUERADE"],
    ]
    jump = ["-s", str(subnet), *comment, "-j", chain]
    cmds: list[list[str]] = []
    if snap.rules.get(chain, []) != body:
        # Declaring a chain makes it, and --noflush still empties one that exists.
        cmds.append([f":{chain}", "-", "[0:0]"])
        cmds += [["-A", chain, *rule] for rule in body]
    if not snap.has("POSTROUTING", jump):
        cmds.append(["-A", "POSTROUTING", *jump])
    return cmds


def setup_ipmasq(subnets: Iterable[IPNetwork], network: str) -> None:
    """Make sure the network's rules for these subnets are in place; ADD calls this once its
    veth is on the bridge. One iptables-save per family, or nothing when the nftables ruleset
    has not changed since this process last found the rules complete; a restore only when
    something is missing (the network's first pod, or rules someone flushed)."""
    by_family: dict[int, list[IPNetwork]] = {}
    for subnet in subnets:
        if subnet not in by_family.setdefault(subnet.version, []):
            by_family[subnet.version].append(subnet)
    for version, nets in sorted(by_family.items()):
        ipt = IPTables(version)
        with _locked(fcntl.LOCK_SH):
            key = _verified_key(ipt, network, nets)
            generation = nftables_generation() if key is not None else None
            if key is not None and generation is not None and _verified.get(key) == generation:
                continue
            snap = ipt.save("nat")
            if not any(_missing(snap, network, n, version) for n in nets):
                if key is not None and generation is not None:
                    _verified[key] = generation  # read before the save: never newer than it
                continue
        with _locked(fcntl.LOCK_EX):
            snap = ipt.save("nat")  # again: another ADD may have written them meanwhile
            cmds = [cmd for n in nets for cmd in _missing(snap, network, n, version)]
            ipt.restore("nat", cmds)


# (netns, iptables binary, network, subnets) -> the nftables generation at which the rules
# were last seen complete. Kept only with iptables-nft, where every change (ours, a flush,
# anyone's) moves the generation: a match proves the rules are still there.
_verified: dict[tuple[int, int, str, str, tuple[str, ...]], int] = {}


def _verified_key(
    ipt: IPTables, network: str, nets: list[IPNetwork]
) -> tuple[int, int, str, str, tuple[str, ...]] | None:
    if not os.path.realpath(ipt.binary).endswith("-nft-multi"):
        return None  # iptables-legacy: no generation to compare
    try:
        netns = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return None
    return (netns.st_dev, netns.st_ino, ipt.binary, network, tuple(sorted(map(str, nets))))


def release_ipmasq(
    network: str, pods_left: Callable[[], list[str]], versions: Iterable[int] = (4, 6)
) -> None:
    """DEL: when the network has no pod left, remove its rules, and the per-pod chains the
    reference plugin made for it (a pod it added and we delete leaves its chain until then:
    the same meaning as ours, so harmless). `pods_left` lists the ports still on the bridge;
    it is asked again under the lock, where any ADD that already checked the rules has its
    veth on the bridge."""
    if pods_left():
        return
    with _locked(fcntl.LOCK_EX):
        if pods_left():
            return
        for version in versions:
            try:
                ipt = IPTables(version)
            except CNIError:
                continue  # e.g. no ip6tables installed: nothing of ours there
            ipt.restore("nat", _sweep(ipt.save("nat"), network))


def _sweep(snap: Snapshot, network: str) -> list[list[str]]:
    cmds: list[list[str]] = []
    chains: list[str] = []
    for rule in snap.rules.get("POSTROUTING", []):
        if _owned_by(rule, network):
            cmds.append(["-D", "POSTROUTING", *rule])
            target = rule[rule.index("-j") + 1] if "-j" in rule[:-1] else ""
            if target.startswith("CNI-") and target in snap.chains and target not in chains:
                chains.append(target)
    for chain in chains:
        cmds += [["-F", chain], ["-X", chain]]
    return cmds

"""ipMasq rules in the reference plugins' exact iptables shape.

    nat POSTROUTING: -s <podIP> -j CNI-<hash> -m comment --comment <c>
    nat CNI-<hash>:  -d <podSubnet> -j ACCEPT      -m comment --comment <c>
                     ! -d 224.0.0.0/4 -j MASQUERADE -m comment --comment <c>

with CNI-<hash> = utils.FormatChainName(network, containerID): one chain per
(network, container), so DEL removes exactly this attachment's rules.
"""

from __future__ import annotations

import hashlib

from cni._iptables import IPTables
from cni._types import IPInterface
from cni.errors import CNIError

_MAX_CHAIN = 28  # iptables chain names must stay below 29 characters


def format_chain_name(network: str, container_id: str, prefix: str = "") -> str:
    """utils.MustFormatChainNameWithPrefix: "CNI-"+prefix+sha512 hex, 28 chars."""
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return ("CNI-" + prefix + digest)[:_MAX_CHAIN]


def format_comment(network: str, container_id: str) -> str:
    # Go's fmt %q; names and IDs are restricted to [A-Za-z0-9_.-] by the
    # skel's validation, so plain double quotes are the exact equivalent.
    return f'name: "{network}" id: "{container_id}"'


def setup_ipmasq(addresses: list[IPInterface], network: str, container_id: str) -> None:
    chain = format_chain_name(network, container_id)
    comment = ["-m", "comment", "--comment", format_comment(network, container_id)]
    for addr in addresses:
        ipt = IPTables(addr.version)
        multicast = "224.0.0.0/4" if addr.version == 4 else "ff00::/8"
        ipt.ensure_chain("nat", chain)
        ipt.insert_unique("nat", chain, ["-d", str(addr.network), "-j", "ACCEPT", *comment])
        ipt.insert_unique("nat", chain, ["!", "-d", multicast, "-j", "MASQUERADE", *comment])
        ipt.insert_unique("nat", "POSTROUTING", ["-s", str(addr.ip), "-j", chain, *comment])


def teardown_ipmasq(network: str, container_id: str) -> None:
    """Remove the chain and every POSTROUTING jump to it, for both families.

    Works without knowing the pod's addresses (the netns may be gone by DEL
    time), and is a no-op when nothing is left.
    """
    chain = format_chain_name(network, container_id)
    for version in (4, 6):
        try:
            ipt = IPTables(version)
        except CNIError:
            continue  # e.g. no ip6tables installed: nothing of ours there
        if not ipt.chain_exists("nat", chain):
            continue
        ipt.delete_references("nat", "POSTROUTING", chain)
        ipt.clear_and_delete_chain("nat", chain)

"""The hostname, hosts and resolv.conf files a pod's containers bind-mount."""

from __future__ import annotations

import ipaddress
import os
import socket

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument

HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"

_DEFAULT_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def _write(path: str, content: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def pod_hostname(config: api.PodSandboxConfig) -> str:
    """The pod's hostname: the config's, else the node's, as containerd and CRI-O do (kubelet
    always sends one; critest does not, and its pod names exceed the 63 chars sethostname takes)."""
    name = config.hostname or socket.gethostname()
    if len(name.encode()) > 63 or "/" in name or not _one_word(name):  # bytes: sethostname
        raise InvalidArgument(f"hostname {name!r} is not valid (one word of at most 63 characters)")
    return name


def _one_word(text: str) -> bool:
    """Whitespace (a newline above all) would add lines or fields to hosts or resolv.conf."""
    return bool(text) and text.split() == [text]


def validate_dns(dns: api.DNSConfig) -> None:
    """What resolv.conf can hold: nameservers are IP addresses, searches and options words."""
    for i, server in enumerate(dns.servers):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidArgument(
                f"dns_config.servers[{i}] {server!r} is not an IP address"
            ) from None
    for field, values in (("searches", dns.searches), ("options", dns.options)):
        for i, value in enumerate(values):
            if not _one_word(value):
                raise InvalidArgument(f"dns_config.{field}[{i}] {value!r} must be one word")


def write_hostname(path: str, hostname: str) -> None:
    _write(path, hostname + "\n")


def write_hosts(path: str, hostname: str, ips: list[str], host_network: bool) -> None:
    """Host-network pods see the node's /etc/hosts; others a default one with their IPs."""
    if host_network:
        try:
            with open(HOST_HOSTS) as f:
                _write(path, f.read())
            return
        except FileNotFoundError:
            pass
    lines = [_DEFAULT_HOSTS]
    lines += [f"{ip}\t{hostname}\n" for ip in ips]
    _write(path, "".join(lines))


def resolv_conf(dns: api.DNSConfig) -> str | None:
    """The resolv.conf text for a DNSConfig, or None when it is empty (use the node's)."""
    if not (dns.servers or dns.searches or dns.options):
        return None
    lines = [f"nameserver {s}" for s in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def write_resolv_conf(path: str, dns: api.DNSConfig) -> None:
    content = resolv_conf(dns)
    if content is None:
        try:
            with open(HOST_RESOLV_CONF) as f:
                content = f.read()
        except FileNotFoundError:
            content = ""
    _write(path, content)

"""CNI result types and their JSON forms for the spec versions we speak.

Plugins work on one internal shape (the 1.0.0 result); conversion to and from
the 0.3.x/0.4.0 wire shape happens only at the edges (prevResult in, result
out), as libcni's `current.NewResultFromResult` does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cni.errors import CNIError, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# Oldest first; the spec's VERSION answer lists them in this order.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
CURRENT_VERSION = "1.0.0"


def version_tuple(version: str) -> tuple[int, int, int]:
    """Parse "X.Y.Z" strictly; CNI versions are always three numbers."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"invalid version {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def parse_ip(value: Any, what: str) -> IPAddress:
    if not isinstance(value, str):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{what}: expected an IP string, got {value!r}")
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{what}: invalid IP {value!r}") from exc


def parse_interface(value: Any, what: str) -> IPInterface:
    """An address with prefix length ("10.1.2.3/24"), host bits kept."""
    if not isinstance(value, str) or "/" not in value:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{what}: expected CIDR, got {value!r}")
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{what}: invalid CIDR {value!r}") from exc


def parse_network(value: Any, what: str) -> IPNetwork:
    """A route destination; like Go's net.ParseCIDR, host bits are masked off."""
    if not isinstance(value, str) or "/" not in value:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{what}: expected CIDR, got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{what}: invalid CIDR {value!r}") from exc


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"{what}: expected a list of strings")
    return list(value)


@dataclass
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.sandbox:
            out["sandbox"] = self.sandbox
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Interface:
        if not isinstance(obj, dict) or not isinstance(obj.get("name", ""), str):
            raise CNIError(ErrorCode.DECODING_FAILURE, "invalid interface in result")
        return cls(
            name=obj.get("name", ""),
            mac=str(obj.get("mac", "") or ""),
            sandbox=str(obj.get("sandbox", "") or ""),
        )


@dataclass
class IPConfig:
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None

    @property
    def is_v4(self) -> bool:
        return self.address.version == 4

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # 0.3.x/0.4.0 results carry an explicit family; 1.0.0 dropped it.
        if version_tuple(version) < (1, 0, 0):
            out["version"] = str(self.address.version)
        if self.interface is not None:
            out["interface"] = self.interface
        out["address"] = str(self.address)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> IPConfig:
        if not isinstance(obj, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, "invalid ips entry in result")
        address = parse_interface(obj.get("address"), "ips.address")
        gateway = obj.get("gateway")
        iface = obj.get("interface")
        if iface is not None and (not isinstance(iface, int) or isinstance(iface, bool)):
            raise CNIError(ErrorCode.DECODING_FAILURE, "ips.interface must be an integer")
        return cls(
            address=address,
            gateway=parse_ip(gateway, "ips.gateway") if gateway else None,
            interface=iface,
        )


@dataclass
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Route:
        if not isinstance(obj, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, "invalid route")
        gw = obj.get("gw")
        return cls(
            dst=parse_network(obj.get("dst"), "route.dst"),
            gw=parse_ip(gw, "route.gw") if gw else None,
        )


@dataclass
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def is_set(self) -> bool:
        return bool(self.nameservers or self.domain or self.search or self.options)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> DNS:
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, "invalid dns")
        domain = obj.get("domain", "") or ""
        if not isinstance(domain, str):
            raise CNIError(ErrorCode.DECODING_FAILURE, "dns.domain must be a string")
        return cls(
            nameservers=_str_list(obj.get("nameservers"), "dns.nameservers"),
            domain=domain,
            search=_str_list(obj.get("search"), "dns.search"),
            options=_str_list(obj.get("options"), "dns.options"),
        )


@dataclass
class Result:
    """A 1.0.0-shaped result; `to_json(version)` renders any supported version."""

    cni_version: str = CURRENT_VERSION
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    def to_json(self, version: str | None = None) -> dict[str, Any]:
        version = version or self.cni_version
        if version not in SUPPORTED_VERSIONS:
            raise CNIError(
                ErrorCode.INCOMPATIBLE_VERSION,
                f"cannot convert result to CNI version {version!r}",
            )
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_json() for i in self.interfaces]
        if self.ips:
            out["ips"] = [ip.to_json(version) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_json() for r in self.routes]
        # Go's encoding/json never omits the DNS struct, so neither do we.
        out["dns"] = self.dns.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Result:
        """Parse a result of any supported version into the internal shape."""
        if not isinstance(obj, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, "result must be a JSON object")
        version = obj.get("cniVersion") or ""
        if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
            raise CNIError(
                ErrorCode.INCOMPATIBLE_VERSION,
                f"unsupported result version {version!r}",
                f"supported: {', '.join(SUPPORTED_VERSIONS)}",
            )
        for key in ("interfaces", "ips", "routes"):
            if obj.get(key) is not None and not isinstance(obj.get(key), list):
                raise CNIError(ErrorCode.DECODING_FAILURE, f"result.{key} must be a list")
        # Like libcni, out-of-range "interface" indexes are kept, not
        # rejected; users of the index check its bounds.
        result = cls(
            cni_version=CURRENT_VERSION,
            interfaces=[Interface.from_json(i) for i in obj.get("interfaces") or []],
            ips=[IPConfig.from_json(i) for i in obj.get("ips") or []],
            routes=[Route.from_json(r) for r in obj.get("routes") or []],
            dns=DNS.from_json(obj.get("dns")),
        )
        return result

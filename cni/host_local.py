"""host-local IPAM, interchangeable with the reference plugin.

Same config keys (ranges / legacy subnet, routes, dataDir, resolvConf, the
ipRanges and ips capabilities, CNI_ARGS IP=, args.cni.ips), same allocation
order (round robin from last_reserved_ip.<rangeset index>, skipping the
gateway) and byte-identical state on disk:

    <dataDir>/<network>/<ip>                 "<containerID>\\r\\n<ifname>"
    <dataDir>/<network>/last_reserved_ip.N   last IP handed out from range set N
    <dataDir>/<network>/lock                 flock(2)ed around every change

so either plugin can release or see what the other allocated.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cni._skel import CmdArgs, Plugin, main_for
from cni._types import (
    DNS,
    IPAddress,
    IPConfig,
    IPNetwork,
    Result,
    Route,
    parse_ip,
    version_tuple,
)
from cni.errors import CNIError, ErrorCode

PLUGIN_TYPE = "criruntime-host-local"
DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LINE_BREAK = "\r\n"
LAST_IP_PREFIX = "last_reserved_ip."


def _config_error(msg: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, msg)


@dataclass
class Range:
    subnet: IPNetwork
    range_start: IPAddress
    range_end: IPAddress
    gateway: IPAddress

    def contains(self, addr: IPAddress) -> bool:
        return (
            addr.version == self.subnet.version
            and addr in self.subnet
            and self.range_start <= addr <= self.range_end  # type: ignore[operator]
        )

    def overlaps(self, other: Range) -> bool:
        if self.subnet.version != other.subnet.version:
            return False
        return (
            self.contains(other.range_start)
            or self.contains(other.range_end)
            or other.contains(self.range_start)
            or other.contains(self.range_end)
        )

    def __str__(self) -> str:
        return f"{self.range_start}-{self.range_end}"

    @classmethod
    def parse(cls, obj: Any) -> Range:
        """Range.Canonicalize() of the reference plugin, same defaults and checks."""
        if not isinstance(obj, dict):
            raise _config_error("range must be an object")
        raw_subnet = obj.get("subnet")
        if not isinstance(raw_subnet, str) or "/" not in raw_subnet:
            raise _config_error(f"invalid subnet {raw_subnet!r}")
        try:
            iface = ipaddress.ip_interface(raw_subnet)
        except ValueError as exc:
            raise _config_error(f"invalid subnet {raw_subnet!r}") from exc
        subnet = iface.network
        if subnet.prefixlen > subnet.max_prefixlen - 2:
            raise _config_error(f"Network {raw_subnet} too small to allocate from")
        if iface.ip != subnet.network_address:
            raise _config_error(
                f"Network has host bits set. For a subnet mask of length "
                f"{subnet.prefixlen} the network address is {subnet.network_address}"
            )
        first = subnet.network_address + 1
        # The last usable address: IPv4 excludes broadcast, IPv6 does not.
        last = subnet.broadcast_address - (1 if subnet.version == 4 else 0)

        def opt_ip(key: str) -> IPAddress | None:
            value = obj.get(key)
            if not value:
                return None
            ip = parse_ip(value, key)
            if ip.version != subnet.version:
                raise _config_error(f"{key} {ip} not in network {subnet}")
            return ip

        gateway = opt_ip("gateway") or first
        start = opt_ip("rangeStart")
        if start is not None and start not in subnet:
            raise _config_error(f"RangeStart {start} not in network {subnet}")
        end = opt_ip("rangeEnd")
        if end is not None and end not in subnet:
            raise _config_error(f"RangeEnd {end} not in network {subnet}")
        return cls(
            subnet=subnet, range_start=start or first, range_end=end or last, gateway=gateway
        )


@dataclass
class RangeSet:
    ranges: list[Range]

    def contains(self, addr: IPAddress) -> bool:
        return self.range_for(addr) is not None

    def range_for(self, addr: IPAddress) -> Range | None:
        for r in self.ranges:
            if r.contains(addr):
                return r
        return None

    def overlaps(self, other: RangeSet) -> bool:
        return any(a.overlaps(b) for a in self.ranges for b in other.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)

    @classmethod
    def parse(cls, obj: Any) -> RangeSet:
        if not isinstance(obj, list):
            raise _config_error("a range set must be a list of ranges")
        if not obj:
            raise _config_error("empty range set")
        ranges = [Range.parse(r) for r in obj]
        if len({r.subnet.version for r in ranges}) > 1:
            raise _config_error("mixed address families")
        for i, r1 in enumerate(ranges):
            for r2 in ranges[i + 1 :]:
                if r1.overlaps(r2):
                    raise _config_error(f"subnets {r1} and {r2} overlap")
        return cls(ranges)


@dataclass
class IPAMConfig:
    name: str
    ranges: list[RangeSet]
    routes: list[Route]
    data_dir: str
    resolv_conf: str
    requested: list[IPAddress]


def _requested_ip(value: Any, what: str) -> IPAddress:
    # The reference's ip.IP accepts both "10.1.2.3" and "10.1.2.3/24".
    if isinstance(value, str) and "/" in value:
        value = value.split("/", 1)[0]
    return parse_ip(value, what)


def load_config(args: CmdArgs) -> IPAMConfig:
    """allocator.LoadIPAMConfig: the same precedence and validation."""
    conf = args.netconf
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise _config_error("IPAM config missing 'ipam' key")

    requested: list[IPAddress] = []
    env_ip = args.cni_args().get("IP")
    if env_ip:
        requested.append(_requested_ip(env_ip, "CNI_ARGS IP"))
    cni_args = (conf.get("args") or {}).get("cni") if isinstance(conf.get("args"), dict) else None
    if isinstance(cni_args, dict) and cni_args.get("ips"):
        requested += [_requested_ip(v, "args.cni.ips") for v in cni_args["ips"]]
    runtime = args.runtime_config
    if runtime.get("ips"):
        requested += [_requested_ip(v, "runtimeConfig.ips") for v in runtime["ips"]]

    raw_sets: list[Any] = []
    # Legacy single-range form: ipam.subnet etc. comes first.
    if ipam.get("subnet"):
        raw_sets.append([{k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}])
    ranges = ipam.get("ranges") or []
    if not isinstance(ranges, list):
        raise _config_error("ipam.ranges must be a list of range sets")
    raw_sets += ranges
    # The ipRanges capability is prepended to the configured ranges, exactly
    # as the reference host-local does (so both plugins allocate alike).
    ip_ranges = runtime.get("ipRanges") or []
    if not isinstance(ip_ranges, list):
        raise _config_error("runtimeConfig.ipRanges must be a list of range sets")
    raw_sets = ip_ranges + raw_sets
    if not raw_sets:
        raise _config_error("no IP ranges specified")

    sets: list[RangeSet] = []
    for i, raw in enumerate(raw_sets):
        try:
            sets.append(RangeSet.parse(raw))
        except CNIError as exc:
            raise _config_error(f"invalid range set {i}: {exc.msg}") from exc
    if version_tuple(args.cni_version or "0.1.0") < (0, 3, 0):
        fams = [s.ranges[0].subnet.version for s in sets]
        if fams.count(4) > 1 or fams.count(6) > 1:
            raise _config_error(
                f"CNI version {args.cni_version} does not support more than 1 address per family"
            )
    for i, s1 in enumerate(sets):
        for j in range(i + 1, len(sets)):
            if s1.overlaps(sets[j]):
                raise _config_error(f"range set {i} overlaps with {j}")

    raw_routes = ipam.get("routes") or []
    if not isinstance(raw_routes, list):
        raise _config_error("ipam.routes must be a list")
    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
    resolv_conf = ipam.get("resolvConf") or ""
    if not isinstance(data_dir, str) or not isinstance(resolv_conf, str):
        raise _config_error("ipam.dataDir and ipam.resolvConf must be strings")
    return IPAMConfig(
        name=args.name,
        ranges=sets,
        routes=[Route.from_json(r) for r in raw_routes],
        data_dir=data_dir,
        resolv_conf=resolv_conf,
        requested=requested,
    )


class Store:
    """The reference disk backend: one file per IP, flock on <dir>/lock."""

    def __init__(self, network: str, data_dir: str) -> None:
        self.dir = os.path.join(data_dir, network)
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self._lock_fd = -1

    def __enter__(self) -> Store:
        # A fresh open() per use gives each caller its own open file
        # description, so flock also serialises threads of one process.
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)  # closing drops the flock

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, range_id: int) -> bool:
        path = os.path.join(self.dir, str(ip))
        try:
            fd = os.open(path, os.O_RDWR | os.O_EXCL | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, (container_id.strip() + LINE_BREAK + ifname).encode())
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        with open(os.path.join(self.dir, f"{LAST_IP_PREFIX}{range_id}"), "w") as f:
            f.write(str(ip))
        return True

    def last_reserved(self, range_id: int) -> IPAddress | None:
        try:
            with open(os.path.join(self.dir, f"{LAST_IP_PREFIX}{range_id}")) as f:
                return ipaddress.ip_address(f.read().strip())
        except (OSError, ValueError):
            return None

    def _entries(self) -> Iterator[tuple[str, str]]:
        """(file name, stripped content) of every regular file in the dir."""
        try:
            scan = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in scan:
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                with open(entry.path, encoding="utf-8", errors="replace", newline="") as f:
                    yield entry.name, f.read().strip()
            except OSError:
                continue

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        match = container_id.strip() + LINE_BREAK + ifname
        old = container_id.strip()  # files written before ifname was recorded
        out: list[IPAddress] = []
        for name, content in self._entries():
            if content in (match, old):
                try:
                    out.append(ipaddress.ip_address(name))
                except ValueError:
                    continue
        return out

    def release_by_id(self, container_id: str, ifname: str) -> None:
        if not self._release_by_key(container_id.strip() + LINE_BREAK + ifname):
            self._release_by_key(container_id.strip())

    def release_ip(self, ip: IPAddress) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, str(ip)))

    def _release_by_key(self, key: str) -> bool:
        found = False
        for name, content in list(self._entries()):
            if content == key:
                try:
                    os.unlink(os.path.join(self.dir, name))
                    found = True
                except FileNotFoundError:
                    pass
        return found


def _iterate(rangeset: RangeSet, last: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
    """The reference RangeIter: round robin from last+1, wrap once, skip gateways."""
    ranges = rangeset.ranges
    idx = 0
    cur: IPAddress | None = None
    start: IPAddress | None = None
    if last is not None:
        for i, r in enumerate(ranges):
            if r.contains(last):
                idx, cur = i, last
                break
    while True:
        r = ranges[idx]
        if cur is None:
            cur = start = r.range_start
        else:
            if cur == r.range_end:
                idx = (idx + 1) % len(ranges)
                r = ranges[idx]
                cur = r.range_start
            else:
                cur = cur + 1
            if start is None:
                start = cur
            elif cur == start:
                return
        if cur == r.gateway:
            continue
        yield cur, r


def _allocate(
    store: Store,
    rangeset: RangeSet,
    range_id: int,
    container_id: str,
    ifname: str,
    requested: IPAddress | None,
) -> IPConfig:
    if requested is not None:
        r = rangeset.range_for(requested)
        if r is None:
            raise CNIError(ErrorCode.INTERNAL, f"{requested} not in range set {rangeset}")
        if requested == r.gateway:
            raise CNIError(ErrorCode.INTERNAL, f"requested ip {requested} is subnet's gateway")
        if not store.reserve(container_id, ifname, requested, range_id):
            raise CNIError(
                ErrorCode.INTERNAL,
                f"requested IP address {requested} is not available in range set {rangeset}",
            )
        return IPConfig(
            address=ipaddress.ip_interface(f"{requested}/{r.subnet.prefixlen}"), gateway=r.gateway
        )
    for ip in store.get_by_id(container_id, ifname):
        if rangeset.contains(ip):
            raise CNIError(
                ErrorCode.INTERNAL,
                f"{ip} has been allocated to {container_id}, duplicate allocation is not allowed",
            )
    for ip, r in _iterate(rangeset, store.last_reserved(range_id)):
        if store.reserve(container_id, ifname, ip, range_id):
            return IPConfig(
                address=ipaddress.ip_interface(f"{ip}/{r.subnet.prefixlen}"), gateway=r.gateway
            )
    raise CNIError(ErrorCode.INTERNAL, f"no IP addresses available in range set: {rangeset}")


def parse_resolv_conf(path: str) -> DNS:
    dns = DNS()
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"failed to read resolvConf {path}: {exc}") from exc
    for line in lines:
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        if fields[0] == "nameserver":
            dns.nameservers.append(fields[1])
        elif fields[0] == "domain":
            dns.domain = fields[1]
        elif fields[0] == "search":
            dns.search += fields[1:]
        elif fields[0] == "options":
            dns.options += fields[1:]
    return dns


def cmd_add(args: CmdArgs) -> Result:
    conf = load_config(args)
    result = Result()
    if conf.resolv_conf:
        result.dns = parse_resolv_conf(conf.resolv_conf)
    pending = list(conf.requested)
    # One lock for the whole ADD: all range sets are taken atomically.
    with Store(conf.name, conf.data_dir) as store:
        try:
            for idx, rangeset in enumerate(conf.ranges):
                want = next((ip for ip in pending if rangeset.contains(ip)), None)
                if want is not None:
                    pending.remove(want)
                try:
                    result.ips.append(
                        _allocate(store, rangeset, idx, args.container_id, args.ifname, want)
                    )
                except CNIError as exc:
                    raise CNIError(
                        exc.code, f"failed to allocate for range {idx}: {exc.msg}"
                    ) from exc
            if pending:
                raise CNIError(
                    ErrorCode.INTERNAL,
                    "failed to allocate all requested IPs: " + " ".join(str(ip) for ip in pending),
                )
        except BaseException:
            # Give back exactly what this ADD reserved (not earlier ones).
            for ipc in result.ips:
                store.release_ip(ipc.address.ip)
            raise
    result.routes = conf.routes
    return result


def cmd_del(args: CmdArgs) -> None:
    conf = load_config(args)
    with Store(conf.name, conf.data_dir) as store:
        store.release_by_id(args.container_id, args.ifname)


def cmd_check(args: CmdArgs) -> None:
    conf = load_config(args)
    with Store(conf.name, conf.data_dir) as store:
        if not store.get_by_id(args.container_id, args.ifname):
            raise CNIError(
                ErrorCode.INTERNAL,
                f"host-local: Failed to find address added by container {args.container_id}",
            )


PLUGIN = Plugin(name=PLUGIN_TYPE, add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    main_for(PLUGIN_TYPE)


if __name__ == "__main__":
    main()

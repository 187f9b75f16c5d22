"""host-local IPAM: allocation, on-disk layout, locking, reference interop.

IPAM needs no namespaces: these run the plugins directly on the host, with
state only under tmp_path (no network traffic, no links).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import cni
from tests.cni.helpers import REFERENCE_DIR, Node, Runner

HL = "criruntime-host-local"


def conf(data_dir: Path, ranges: list[Any], version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "hlnet",
        "type": "bridge",
        "ipam": {"type": HL, "dataDir": str(data_dir), "ranges": ranges, **ipam},
    }


def env(cid: str, ifname: str = "eth0", args: str = "") -> dict[str, str]:
    return {
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": "/var/run/netns/unused",
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": "/nonexistent",
    }


def add(c: dict[str, Any], cid: str, ifname: str = "eth0", args: str = "") -> dict[str, Any]:
    out = cni.invoke(HL, "ADD", c, env(cid, ifname, args))
    assert out is not None
    return out


def addresses(out: dict[str, Any]) -> list[str]:
    return [ip["address"] for ip in out["ips"]]


@pytest.fixture
def runner(cni_path: str) -> Runner:
    return Runner(Node(None), cni_path)


def test_dual_stack_layout_matches_reference(tmp_path: Path) -> None:
    c = conf(
        tmp_path,
        [[{"subnet": "10.10.0.0/24"}], [{"subnet": "fd10::/64"}]],
        routes=[{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"}],
    )
    out = add(c, "ctr-a")
    assert out == {
        "cniVersion": "1.0.0",
        "ips": [
            {"address": "10.10.0.2/24", "gateway": "10.10.0.1"},
            {"address": "fd10::2/64", "gateway": "fd10::1"},
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"}],
        "dns": {},
    }
    d = tmp_path / "hlnet"
    assert sorted(os.listdir(d)) == [
        "10.10.0.2",
        "fd10::2",
        "last_reserved_ip.0",
        "last_reserved_ip.1",
        "lock",
    ]
    assert (d / "10.10.0.2").read_bytes() == b"ctr-a\r\neth0"
    assert (d / "fd10::2").read_bytes() == b"ctr-a\r\neth0"
    assert (d / "last_reserved_ip.0").read_bytes() == b"10.10.0.2"
    assert (d / "last_reserved_ip.1").read_bytes() == b"fd10::2"

    assert addresses(add(c, "ctr-b")) == ["10.10.0.3/24", "fd10::3/64"]
    cni.invoke(HL, "CHECK", c, env("ctr-a"))
    cni.invoke(HL, "DEL", c, env("ctr-a"))
    cni.invoke(HL, "DEL", c, env("ctr-a"))  # idempotent
    assert not (d / "10.10.0.2").exists()
    with pytest.raises(cni.CNIError, match="Failed to find address added by container ctr-a"):
        cni.invoke(HL, "CHECK", c, env("ctr-a"))
    # Round robin: the freed .2 is not handed out again before the range wraps.
    assert addresses(add(c, "ctr-c")) == ["10.10.0.4/24", "fd10::4/64"]


def test_old_versions_carry_ip_version(tmp_path: Path) -> None:
    out = add(conf(tmp_path, [[{"subnet": "10.11.0.0/24"}]], version="0.3.1"), "c1")
    assert out["ips"] == [{"version": "4", "address": "10.11.0.2/24", "gateway": "10.11.0.1"}]


def test_range_bounds_gateway_and_exhaustion(tmp_path: Path) -> None:
    c = conf(
        tmp_path,
        [
            [
                {
                    "subnet": "10.12.0.0/24",
                    "rangeStart": "10.12.0.10",
                    "rangeEnd": "10.12.0.12",
                    "gateway": "10.12.0.11",
                },
                {"subnet": "10.13.0.0/30"},
            ]
        ],
    )
    got = [addresses(add(c, f"c{i}"))[0] for i in range(3)]
    # .11 is the gateway and skipped; then the next range of the set (.1 is its gw).
    assert got == ["10.12.0.10/24", "10.12.0.12/24", "10.13.0.2/30"]
    with pytest.raises(cni.CNIError, match="no IP addresses available in range set"):
        add(c, "c4")
    assert len([f for f in os.listdir(tmp_path / "hlnet") if f.startswith("10.")]) == 3


def test_wraps_around_to_free_addresses(tmp_path: Path) -> None:
    c = conf(tmp_path, [[{"subnet": "10.14.0.0/29"}]])  # .2-.6 usable
    for i in range(5):
        add(c, f"c{i}")
    cni.invoke(HL, "DEL", c, env("c1"))  # frees .3
    assert addresses(add(c, "c9")) == ["10.14.0.3/29"]


def test_requested_ip_via_cni_args_and_runtime_config(tmp_path: Path) -> None:
    c = conf(tmp_path, [[{"subnet": "10.15.0.0/24"}], [{"subnet": "fd15::/64"}]])
    assert addresses(add(c, "c1", args="IgnoreUnknown=1;IP=10.15.0.77")) == [
        "10.15.0.77/24",
        "fd15::2/64",
    ]
    with pytest.raises(cni.CNIError, match="not available"):
        add(c, "c2", args="IP=10.15.0.77")
    # the failed ADD must not leave a half allocation behind
    assert "fd15::3" not in os.listdir(tmp_path / "hlnet")
    c2 = {**c, "runtimeConfig": {"ips": ["fd15::99/64"]}}
    # A requested IP moves the round robin on, as in the reference plugin.
    assert addresses(add(c2, "c3")) == ["10.15.0.78/24", "fd15::99/64"]
    with pytest.raises(cni.CNIError, match=r"failed to allocate all requested IPs: 10\.99\.0\.1"):
        add({**c, "args": {"cni": {"ips": ["10.99.0.1"]}}}, "c4")
    with pytest.raises(cni.CNIError, match="gateway"):
        add(c, "c5", args="IP=10.15.0.1")


def test_ip_ranges_capability_and_legacy_subnet(tmp_path: Path) -> None:
    c = conf(tmp_path, [])
    c["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.16.0.0/24"}]]}
    assert addresses(add(c, "c1")) == ["10.16.0.2/24"]
    # Like the reference plugin, ipRanges go in front of the configured ranges.
    c = conf(tmp_path / "b", [[{"subnet": "fd16::/64"}]])
    c["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.17.0.0/24"}]]}
    assert addresses(add(c, "c1")) == ["10.17.0.2/24", "fd16::2/64"]
    c = conf(tmp_path / "c", [], subnet="10.18.0.0/16", gateway="10.18.0.254")
    assert add(c, "c1")["ips"] == [{"address": "10.18.0.1/16", "gateway": "10.18.0.254"}]


@pytest.mark.parametrize(
    ("ranges", "msg"),
    [
        ([], "no IP ranges specified"),
        ([[{"subnet": "10.19.0.0/31"}]], "too small to allocate from"),
        ([[{"subnet": "10.19.0.5/24"}]], "Network has host bits set"),
        ([[{"subnet": "10.19.0.0/24", "rangeStart": "10.20.0.1"}]], "RangeStart 10.20.0.1 not in"),
        ([[{"subnet": "10.19.0.0/24"}, {"subnet": "fd19::/64"}]], "mixed address families"),
        (
            [[{"subnet": "10.19.0.0/24"}], [{"subnet": "10.19.0.0/25"}]],
            "range set 0 overlaps with 1",
        ),
    ],
)
def test_config_errors(tmp_path: Path, ranges: list[Any], msg: str) -> None:
    with pytest.raises(cni.CNIError, match=msg) as exc_info:
        add(conf(tmp_path, ranges), "c1")
    assert exc_info.value.code == 7


def test_dns_from_resolv_conf(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text(
        "# c\nnameserver 10.0.0.10\nnameserver 10.0.0.11\ndomain example\n"
        "search a.example b.example\noptions ndots:5\n"
    )
    out = add(conf(tmp_path, [[{"subnet": "10.21.0.0/24"}]], resolvConf=str(rc)), "c1")
    assert out["dns"] == {
        "nameservers": ["10.0.0.10", "10.0.0.11"],
        "domain": "example",
        "search": ["a.example", "b.example"],
        "options": ["ndots:5"],
    }


def test_duplicate_allocation_is_refused_and_keeps_the_first(tmp_path: Path) -> None:
    c = conf(tmp_path, [[{"subnet": "10.22.0.0/24"}]])
    add(c, "c1")
    with pytest.raises(cni.CNIError, match="duplicate allocation is not allowed"):
        add(c, "c1")
    assert (tmp_path / "hlnet" / "10.22.0.2").read_bytes() == b"c1\r\neth0"
    # Another interface of the same container is a different attachment.
    assert addresses(add(c, "c1", ifname="net1")) == ["10.22.0.3/24"]


def test_legacy_reservation_files_are_released(tmp_path: Path) -> None:
    c = conf(tmp_path, [[{"subnet": "10.23.0.0/24"}]])
    d = tmp_path / "hlnet"
    d.mkdir()
    (d / "10.23.0.9").write_text("old-ctr")  # written by pre-ifname plugin versions
    cni.invoke(HL, "CHECK", c, env("old-ctr"))
    cni.invoke(HL, "DEL", c, env("old-ctr"))
    assert not (d / "10.23.0.9").exists()


def test_concurrent_adds_get_distinct_ips(tmp_path: Path, runner: Runner) -> None:
    c = conf(tmp_path, [[{"subnet": "10.24.0.0/24"}], [{"subnet": "fd24::/64"}]])
    barrier = threading.Barrier(12)

    def one(i: int) -> list[str]:
        barrier.wait()
        return addresses(add(c, f"thread-{i}"))

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    flat = [a for r in results for a in r]
    assert len(set(flat)) == 24

    # Processes too: six executables at once on the same data dir.
    procs = []
    for i in range(6):
        full = {**os.environ, **runner.env(f"proc-{i}", "/x"), "CNI_COMMAND": "ADD"}
        binary = os.path.join(runner.cni_path.split(":")[0], HL)
        procs.append(
            subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full)
        )
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(json.dumps(c).encode())
        p.stdin.close()
    for p in procs:
        assert p.stdout is not None
        out = json.loads(p.stdout.read())
        assert p.wait(timeout=60) == 0, out
        flat += addresses(out)
    assert len(set(flat)) == 36
    files = [f for f in os.listdir(tmp_path / "hlnet") if f[0].isdigit() or f.startswith("fd")]
    assert len(files) == 36


@pytest.fixture
def reference_host_local() -> str:
    return os.path.join(REFERENCE_DIR, "host-local")


def test_concurrent_with_reference_plugin(
    tmp_path: Path, runner: Runner, reference_host_local: str
) -> None:
    """Ours and the reference share the flock and the files: no double allocation."""
    ranges = [[{"subnet": "10.25.0.0/24"}]]
    procs: list[tuple[subprocess.Popen[bytes], bytes]] = []
    for i in range(8):
        plugin = HL if i % 2 else "host-local"
        c = conf(tmp_path, ranges)
        c["ipam"]["type"] = plugin
        binary = (
            reference_host_local
            if plugin == "host-local"
            else os.path.join(runner.cni_path.split(":")[0], HL)
        )
        full = {**os.environ, **runner.env(f"mix-{i}", "/x"), "CNI_COMMAND": "ADD"}
        p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full)
        procs.append((p, json.dumps(c).encode()))
    for p, data in procs:
        assert p.stdin is not None
        p.stdin.write(data)
        p.stdin.close()
    got = []
    for p, _ in procs:
        assert p.stdout is not None
        out = json.loads(p.stdout.read())
        assert p.wait(timeout=60) == 0, out
        got += addresses(out)
    assert len(set(got)) == 8


def test_interop_with_reference_state(
    tmp_path: Path, runner: Runner, reference_host_local: str
) -> None:
    ranges = [[{"subnet": "10.26.0.0/24"}], [{"subnet": "fd26::/64"}]]
    ref = conf(tmp_path, ranges)
    ref["ipam"]["type"] = "host-local"
    ours = conf(tmp_path, ranges)

    def run_ref(command: str, cid: str) -> Any:
        res = runner.exec("host-local", command, ref, runner.env(cid, "/x"))
        assert res.rc == 0, res.out
        return res.out

    r1 = run_ref("ADD", "ref-1")
    assert [ip["address"] for ip in r1["ips"]] == ["10.26.0.2/24", "fd26::2/64"]
    # Ours continues the reference's round robin and sees its reservation.
    assert addresses(add(ours, "ours-1")) == ["10.26.0.3/24", "fd26::3/64"]
    cni.invoke(HL, "CHECK", ours, env("ref-1"))
    # The reference sees ours (CHECK) and continues after it.
    run_ref("CHECK", "ours-1")
    r2 = run_ref("ADD", "ref-2")
    assert [ip["address"] for ip in r2["ips"]] == ["10.26.0.4/24", "fd26::4/64"]
    # Each releases what the other allocated.
    cni.invoke(HL, "DEL", ours, env("ref-1"))
    run_ref("DEL", "ours-1")
    left = sorted(f for f in os.listdir(tmp_path / "hlnet") if f[0].isdigit() or f.startswith("fd"))
    assert left == ["10.26.0.4", "fd26::4"]


def test_executable_matches_in_process(tmp_path: Path, runner: Runner) -> None:
    c = conf(tmp_path, [[{"subnet": "10.27.0.0/24"}]], version="0.4.0")
    res = runner.exec(HL, "ADD", c, runner.env("e1", "/x"))
    assert res.rc == 0
    assert res.out == {
        "cniVersion": "0.4.0",
        "ips": [{"version": "4", "address": "10.27.0.2/24", "gateway": "10.27.0.1"}],
        "dns": {},
    }
    bad = runner.exec(HL, "ADD", conf(tmp_path, []), runner.env("e2", "/x"))
    assert bad.rc == 1
    assert bad.out == {
        "cniVersion": "1.0.0",
        "code": 7,
        "msg": "no IP ranges specified",
        "details": "",
    }

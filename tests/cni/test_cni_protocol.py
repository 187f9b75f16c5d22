"""The CNI protocol layer: VERSION, env validation, error objects, versions."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

import cni
from cni._types import Result
from tests.cni.helpers import OUR_TYPES, Netns, Node, Runner

ALL = sorted(OUR_TYPES)


def _exec_raw(cni_path: str, plugin: str, env: dict[str, str], stdin: bytes) -> tuple[int, Any]:
    binary = os.path.join(cni_path.split(":")[0], plugin)
    proc = subprocess.run(
        [binary],
        input=stdin,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        timeout=60,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


@pytest.mark.parametrize("plugin", ALL)
def test_version_exec_and_in_process(cni_path: str, plugin: str) -> None:
    rc, out = _exec_raw(cni_path, plugin, {"CNI_COMMAND": "VERSION"}, b"")
    assert rc == 0
    assert out["cniVersion"] == "1.0.0"
    for v in ("0.3.0", "0.3.1", "0.4.0", "1.0.0"):
        assert v in out["supportedVersions"]
    assert cni.invoke(plugin, "VERSION", b"", {}) == out


def test_no_command_prints_about(cni_path: str) -> None:
    binary = os.path.join(cni_path.split(":")[0], "criruntime-bridge")
    proc = subprocess.run([binary], env={}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0" in proc.stderr


BASE_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc",
    "CNI_NETNS": "/var/run/netns/does-not-exist",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/nonexistent",
}
CONF = {"cniVersion": "1.0.0", "name": "n1", "type": "criruntime-loopback"}


@pytest.mark.parametrize(
    ("env_change", "stdin", "code", "msg"),
    [
        ({"CNI_NETNS": ""}, CONF, 4, "required env variables [CNI_NETNS] missing"),
        ({"CNI_CONTAINERID": "", "CNI_PATH": ""}, CONF, 4, "[CNI_CONTAINERID,CNI_PATH]"),
        ({"CNI_COMMAND": "FROB"}, CONF, 4, "unknown CNI_COMMAND: FROB"),
        ({"CNI_CONTAINERID": "bad/id"}, CONF, 4, "invalid characters in containerID"),
        ({"CNI_IFNAME": "x" * 16}, CONF, 4, "interface name is too long"),
        ({}, b"{not json", 6, "error unmarshall network config"),
        ({}, {**CONF, "name": ""}, 7, "missing network name"),
        ({}, {**CONF, "name": "a/b"}, 7, "invalid characters found in network name"),
        ({}, {**CONF, "cniVersion": "0.2.0"}, 1, "incompatible CNI versions"),
        ({"CNI_COMMAND": "CHECK"}, {**CONF, "cniVersion": "0.3.1"}, 1, "does not allow CHECK"),
        ({}, CONF, 8, "failed to open netns"),
    ],
)
def test_errors_same_in_process_and_exec(
    cni_path: str, env_change: dict[str, str], stdin: Any, code: int, msg: str
) -> None:
    env = {**BASE_ENV, **env_change}
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    rc, out = _exec_raw(cni_path, "criruntime-loopback", env, data)
    assert rc == 1
    assert set(out) == {"cniVersion", "code", "msg", "details"}
    assert out["code"] == code, out
    assert msg in out["msg"] + out["details"]
    with pytest.raises(cni.CNIError) as exc_info:
        cni.invoke("criruntime-loopback", env["CNI_COMMAND"], data, env)
    assert exc_info.value.to_json(out["cniVersion"]) == out


def test_host_netns_as_container_netns_is_refused(cni_path: str) -> None:
    env = {**BASE_ENV, "CNI_NETNS": "/proc/self/ns/net"}
    with pytest.raises(cni.CNIError) as exc_info:
        cni.invoke("criruntime-loopback", "ADD", CONF, env)
    assert exc_info.value.code == 8
    assert "should not be the same" in exc_info.value.msg


def test_del_is_idempotent_without_netns(cni_path: str) -> None:
    for netns in ("", "/var/run/netns/never-existed"):
        env = {**BASE_ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": netns}
        assert cni.invoke("criruntime-loopback", "DEL", CONF, env) is None
        rc, out = _exec_raw(cni_path, "criruntime-loopback", env, json.dumps(CONF).encode())
        assert (rc, out) == (0, None)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
def test_loopback_result_versions(
    version: str, node: Node, pod: Callable[[], Netns], runner_for: Callable[[Node], Runner]
) -> None:
    p = pod()
    runner = runner_for(node)
    conf = {**CONF, "cniVersion": version}
    env = runner.env("c" + version.replace(".", ""), p.path, "lo")
    out = runner.invoke("criruntime-loopback", "ADD", conf, env)
    assert out is not None
    exec_out = runner.exec("criruntime-loopback", "ADD", conf, env)
    assert exec_out.rc == 0 and exec_out.out == out
    assert out["cniVersion"] == version
    assert out["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": p.path}]
    v4 = out["ips"][0]
    assert v4["address"] == "127.0.0.1/8" and v4["interface"] == 0
    if version == "1.0.0":
        assert "version" not in v4
    else:
        assert v4["version"] == "4"
    assert "UP" in node.run("ip", "-n", p.name, "link", "show", "lo").stdout
    if version >= "0.4.0":
        runner.invoke("criruntime-loopback", "CHECK", {**conf, "prevResult": out}, env)
    runner.invoke("criruntime-loopback", "DEL", conf, env)
    with pytest.raises(cni.CNIError, match="loopback interface is down"):
        runner.invoke("criruntime-loopback", "CHECK", {**conf, "cniVersion": "1.0.0"}, env)
    p.delete()
    runner.invoke("criruntime-loopback", "DEL", conf, env)  # netns gone: still fine


def test_result_round_trip_between_versions() -> None:
    raw = {
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/x"}],
        "ips": [
            {"version": "4", "address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0},
            {"version": "6", "address": "fd00::3/64", "interface": 0},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}],
        "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.local"]},
    }
    res = Result.from_json(raw)
    assert res.to_json("0.3.1") == raw
    as_one = res.to_json("1.0.0")
    assert all("version" not in ip for ip in as_one["ips"])
    assert Result.from_json(as_one).to_json("0.3.1") == raw
    with pytest.raises(cni.CNIError):
        Result.from_json({**raw, "cniVersion": "0.2.0"})

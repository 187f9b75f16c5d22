"""CniExecutor against fake plugins (tiny shell scripts) and a fake in-process runner:
prevResult chaining, DEL order and cache, capabilities, CHECK, errors and timeouts."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from collections.abc import Mapping
from typing import Any

import pytest

from criruntime.network import cni_config
from criruntime.network.cni_executor import CniExecutor, PluginError, RuntimeConf, result_ips

# Each fake plugin logs "<name> <command>" and its stdin, then prints $RESULT for ADD.
_PLUGIN = """#!/bin/sh
cat > "{log}/$CNI_COMMAND-{name}.json"
echo "{name} $CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS $CNI_ARGS" >> "{log}/order"
{body}
"""


def make_plugin(bin_dir: str, log: str, name: str, body: str = "") -> None:
    path = os.path.join(bin_dir, name)
    with open(path, "w") as f:
        f.write(_PLUGIN.format(log=log, name=name, body=body))
    os.chmod(path, stat.S_IRWXU)


def result_body(ip: str) -> str:
    result = {"cniVersion": "1.0.0", "ips": [{"address": ip}]}
    return f"[ \"$CNI_COMMAND\" = ADD ] && echo '{json.dumps(result)}'\nexit 0"


@pytest.fixture
def env(tmp_path: Any) -> dict[str, str]:
    dirs = {k: str(tmp_path / k) for k in ("bin", "log", "cache", "conf")}
    for d in dirs.values():
        os.makedirs(d)
    return dirs


def conflist(env: dict[str, str], plugins: list[dict[str, Any]], version: str = "1.0.0") -> Any:
    path = os.path.join(env["conf"], "10-fake.conflist")
    with open(path, "w") as f:
        json.dump({"cniVersion": version, "name": "fakenet", "plugins": plugins}, f)
    return cni_config.load_default(env["conf"], [env["bin"]])


def read(env: dict[str, str], name: str) -> Any:
    with open(os.path.join(env["log"], name)) as f:
        return json.load(f) if name.endswith(".json") else f.read().splitlines()


RT = RuntimeConf(
    container_id="abc123",
    netns="/var/run/netns/x",
    args=[("K8S_POD_NAME", "p"), ("IgnoreUnknown", "1")],
    capability_args={"portMappings": [{"hostPort": 8080, "containerPort": 80}], "bandwidth": {}},
)


def test_add_chains_prev_result_caches_and_del_reverses(env: dict[str, str]) -> None:
    make_plugin(env["bin"], env["log"], "first", result_body("10.1.0.5/24"))
    make_plugin(env["bin"], env["log"], "second", result_body("10.1.0.6/24"))
    net = conflist(
        env,
        [
            {"type": "first", "x": 1},
            {"type": "second", "capabilities": {"portMappings": True, "ipRanges": True}},
        ],
    )
    ex = CniExecutor([env["bin"]], env["cache"])
    result = asyncio.run(ex.add(net, RT))
    assert result_ips(result) == ["10.1.0.6"]

    first_in = read(env, "ADD-first.json")
    assert first_in["name"] == "fakenet" and first_in["cniVersion"] == "1.0.0"
    assert "prevResult" not in first_in and "runtimeConfig" not in first_in
    second_in = read(env, "ADD-second.json")
    assert second_in["prevResult"]["ips"] == [{"address": "10.1.0.5/24"}]
    # Only declared capabilities, and only those the runtime has.
    assert second_in["runtimeConfig"] == {"portMappings": RT.capability_args["portMappings"]}

    # libcni's cache layout and fields.
    cache_file = os.path.join(env["cache"], "results", "fakenet-abc123-eth0")
    with open(cache_file) as f:
        cached = json.load(f)
    assert cached["kind"] == "cniCacheV1" and cached["containerId"] == "abc123"
    assert cached["ifName"] == "eth0" and cached["networkName"] == "fakenet"
    assert json.loads(base64.b64decode(cached["config"]))["name"] == "fakenet"
    assert cached["result"] == result
    assert cached["cniArgs"] == [["K8S_POD_NAME", "p"], ["IgnoreUnknown", "1"]]

    asyncio.run(ex.check(net, RT))
    assert read(env, "CHECK-second.json")["prevResult"] == result

    asyncio.run(ex.delete(net, RT))
    order = [line.split()[:2] for line in read(env, "order")]
    assert order == [
        ["first", "ADD"], ["second", "ADD"],
        ["first", "CHECK"], ["second", "CHECK"],
        ["second", "DEL"], ["first", "DEL"],
    ]  # fmt: skip
    assert read(env, "DEL-first.json")["prevResult"] == result
    env_line = read(env, "order")[0].split(" ", 2)[2]
    assert env_line == "abc123 eth0 /var/run/netns/x K8S_POD_NAME=p;IgnoreUnknown=1"
    assert not os.path.exists(cache_file)
    asyncio.run(ex.delete(net, RT))  # DEL without a cache is fine


def test_del_uses_cached_config_after_the_conflist_changed(env: dict[str, str]) -> None:
    for name in ("old", "new"):
        make_plugin(env["bin"], env["log"], name, result_body("10.2.0.2/24"))
    ex = CniExecutor([env["bin"]], env["cache"])
    asyncio.run(ex.add(conflist(env, [{"type": "old"}]), RT))
    asyncio.run(ex.delete(conflist(env, [{"type": "new"}]), RT))
    assert [line.split()[:2] for line in read(env, "order")] == [["old", "ADD"], ["old", "DEL"]]


def test_plugin_error_message_and_del_runs_every_plugin(env: dict[str, str]) -> None:
    err = {"cniVersion": "1.0.0", "code": 7, "msg": "bad subnet", "details": "10.0.0.0/33"}
    make_plugin(env["bin"], env["log"], "good", result_body("10.3.0.2/24"))
    make_plugin(env["bin"], env["log"], "bad", f"echo '{json.dumps(err)}'\nexit 1")
    ex = CniExecutor([env["bin"]], env["cache"])
    net = conflist(env, [{"type": "good"}, {"type": "bad"}])
    with pytest.raises(PluginError) as e:
        asyncio.run(ex.add(net, RT))
    assert str(e.value) == (
        "plugin type='bad' failed (ADD): bad subnet: 10.0.0.0/33 (CNI error code 7)"
    )
    assert e.value.code == 7
    with pytest.raises(PluginError):
        asyncio.run(ex.delete(net, RT))
    # bad's DEL failed, good's DEL still ran.
    assert [line.split()[:2] for line in read(env, "order")][-2:] == [
        ["bad", "DEL"],
        ["good", "DEL"],
    ]


def test_stderr_is_the_message_without_an_error_object(env: dict[str, str]) -> None:
    make_plugin(env["bin"], env["log"], "crash", "echo 'segfault-ish' >&2\nexit 2")
    ex = CniExecutor([env["bin"]], env["cache"])
    with pytest.raises(PluginError, match="segfault-ish"):
        asyncio.run(ex.add(conflist(env, [{"type": "crash"}]), RT))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("echo '{\"cniVersion\":\"1.0.0\",\"ips\":\"nope\"}'", "ips is not a list"),
        ("echo '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"999.1.1.1/24\"}]}'",
         "invalid address: '999.1.1.1/24'"),
        # 200 MB of output: refused, and not held in the daemon's memory.
        ("head -c 200000000 /dev/zero", "wrote more than 1048576 bytes"),
    ],
)  # fmt: skip
def test_broken_results_fail_the_add(env: dict[str, str], body: str, message: str) -> None:
    make_plugin(env["bin"], env["log"], "broken", f'[ "$CNI_COMMAND" = ADD ] || exit 0\n{body}')
    ex = CniExecutor([env["bin"]], env["cache"])
    with pytest.raises(PluginError, match=message):
        asyncio.run(ex.add(conflist(env, [{"type": "broken"}]), RT))


def test_per_plugin_timeout(env: dict[str, str]) -> None:
    make_plugin(env["bin"], env["log"], "slow", "exec sleep 30")
    ex = CniExecutor([env["bin"]], env["cache"], plugin_timeout=0.3)
    with pytest.raises(PluginError, match=r"timed out after 0\.3s"):
        asyncio.run(ex.add(conflist(env, [{"type": "slow"}]), RT))


def test_check_needs_040(env: dict[str, str]) -> None:
    make_plugin(env["bin"], env["log"], "p", result_body("10.4.0.2/24"))
    ex = CniExecutor([env["bin"]], env["cache"])
    net = conflist(env, [{"type": "p"}], version="0.3.1")
    asyncio.run(ex.add(net, RT))
    with pytest.raises(PluginError, match="CHECK needs cniVersion"):
        asyncio.run(ex.check(net, RT))
    asyncio.run(ex.delete(net, RT))
    assert "prevResult" not in read(env, "DEL-p.json")  # 0.3.x DEL gets no prevResult


class FakeInProcess:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def handles(self, plugin_type: str) -> bool:
        return plugin_type.startswith("own-")

    async def run(
        self, plugin_type: str, env: Mapping[str, str], stdin: bytes, time_limit: float
    ) -> tuple[int, bytes]:
        self.calls.append((plugin_type, env["CNI_COMMAND"], json.loads(stdin)))
        if env["CNI_COMMAND"] == "ADD":
            return 0, json.dumps(
                {"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.9/24"}]}
            ).encode()
        return 0, b""


def test_in_process_plugins_mix_with_executables(env: dict[str, str]) -> None:
    make_plugin(env["bin"], env["log"], "exe", result_body("10.9.0.9/24"))
    # own-bridge need not exist in bin_dirs for the executor; cni_config checks executables.
    open(os.path.join(env["bin"], "own-bridge"), "w").close()
    os.chmod(os.path.join(env["bin"], "own-bridge"), stat.S_IRWXU)
    fake = FakeInProcess()
    ex = CniExecutor([env["bin"]], env["cache"], in_process=fake)
    net = conflist(env, [{"type": "own-bridge"}, {"type": "exe"}])
    asyncio.run(ex.add(net, RT))
    assert read(env, "ADD-exe.json")["prevResult"]["ips"] == [{"address": "10.9.0.9/24"}]
    asyncio.run(ex.delete(net, RT))
    assert [(t, c) for t, c, _ in fake.calls] == [("own-bridge", "ADD"), ("own-bridge", "DEL")]
    assert fake.calls[1][2]["prevResult"]["ips"] == [{"address": "10.9.0.9/24"}]


def test_result_ips_orders_ipv4_first() -> None:
    result = {"ips": [{"address": "fd00::5/64"}, {"address": "10.0.0.5/24"}]}
    assert result_ips(result) == ["10.0.0.5", "fd00::5"]


def test_del_drops_a_cache_write_a_kill_cut_short(env: dict[str, str]) -> None:
    # A daemon killed while writing the result cache leaves `<entry>.tmp`; recovery tears the
    # half-made pod down with DEL, which must take the .tmp too, or it stays forever.
    make_plugin(env["bin"], env["log"], "only", result_body("10.3.0.2/24"))
    net = conflist(env, [{"type": "only"}])
    ex = CniExecutor([env["bin"]], env["cache"])
    cache_file = os.path.join(env["cache"], "results", "fakenet-abc123-eth0")
    os.makedirs(os.path.dirname(cache_file))
    with open(cache_file + ".tmp", "w") as f:
        f.write('{"kind": "cniCa')
    asyncio.run(ex.delete(net, RT))
    assert os.listdir(os.path.dirname(cache_file)) == []

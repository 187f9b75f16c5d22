"""Node-level RPCs against the real daemon: Version, Status, RuntimeConfig, UpdateRuntimeConfig."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable

import grpc
import pytest

from criruntime import __version__
from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.sandbox import user_namespace
from tests.conftest import Daemon


def _conditions(response: api.StatusResponse) -> dict[str, api.RuntimeCondition]:
    return {c.type: c for c in response.status.conditions}


def test_version(shared_daemon: Daemon) -> None:
    v = shared_daemon.runtime.Version(api.VersionRequest(version="0.1.0"))
    assert (v.version, v.runtime_name, v.runtime_version, v.runtime_api_version) == (
        "0.1.0",
        "criruntime",
        __version__,
        "v1",
    )


def test_status_conditions_without_cni_config(shared_daemon: Daemon) -> None:
    conditions = _conditions(shared_daemon.runtime.Status(api.StatusRequest()))
    assert conditions["RuntimeReady"].status is True
    network = conditions["NetworkReady"]
    assert network.status is False
    assert network.reason == "NetworkPluginNotReady"
    assert shared_daemon.cni_conf_dir in network.message


def test_status_lists_runtime_handlers(shared_daemon: Daemon) -> None:
    response = shared_daemon.runtime.Status(api.StatusRequest())
    names = [h.name for h in response.runtime_handlers]
    assert names == ["", "crun", "runc"]  # "" is the default handler


def test_status_verbose_shows_effective_config(shared_daemon: Daemon) -> None:
    response = shared_daemon.runtime.Status(api.StatusRequest(verbose=True))
    config = json.loads(response.info["config"])
    assert config["socket"] == shared_daemon.socket
    assert config["root"] == shared_daemon.root
    assert config["cni"]["conf_dir"] == shared_daemon.cni_conf_dir
    assert config["cgroup_driver"] == "cgroupfs"
    assert json.loads(response.info["podCIDR"]) == ""
    assert not shared_daemon.runtime.Status(api.StatusRequest()).info  # only when verbose


def _install_network(d: Daemon, name: str, plugin: str = "fake-plugin") -> None:
    binary = os.path.join(d.cni_bin_dir, plugin)
    with open(binary, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(binary, 0o755)
    conf = {"cniVersion": "1.0.0", "name": "testnet", "plugins": [{"type": plugin}]}
    with open(os.path.join(d.cni_conf_dir, name), "w") as f:
        json.dump(conf, f)


def test_network_ready_follows_cni_config_without_restart(daemon: Daemon) -> None:
    assert not _conditions(daemon.runtime.Status(api.StatusRequest()))["NetworkReady"].status
    # A conflist whose plugin is missing does not make the network ready, and says why.
    with open(os.path.join(daemon.cni_conf_dir, "05-broken.conflist"), "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "nope"}]}, f)
    network = _conditions(daemon.runtime.Status(api.StatusRequest()))["NetworkReady"]
    assert not network.status
    assert "nope" in network.message
    _install_network(daemon, "10-test.conflist")
    response = daemon.runtime.Status(api.StatusRequest(verbose=True))
    assert _conditions(response)["NetworkReady"].status is True
    assert json.loads(response.info["cniconfig"])["name"] == "testnet"
    os.unlink(os.path.join(daemon.cni_conf_dir, "10-test.conflist"))
    assert not _conditions(daemon.runtime.Status(api.StatusRequest()))["NetworkReady"].status


def test_runtime_config_reports_cgroupfs(shared_daemon: Daemon) -> None:
    response = shared_daemon.runtime.RuntimeConfig(api.RuntimeConfigRequest())
    assert response.linux.cgroup_driver == api.CgroupDriver.CGROUPFS


def test_runtime_config_follows_config(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon('cgroup_driver = "systemd"\n')
    response = d.runtime.RuntimeConfig(api.RuntimeConfigRequest())
    assert response.linux.cgroup_driver == api.CgroupDriver.SYSTEMD


def _update(d: Daemon, cidr: str) -> None:
    d.runtime.UpdateRuntimeConfig(
        api.UpdateRuntimeConfigRequest(
            runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr=cidr))
        )
    )


def _pod_cidr(d: Daemon) -> str:
    return str(json.loads(d.runtime.Status(api.StatusRequest(verbose=True)).info["podCIDR"]))


def test_update_runtime_config_persists_pod_cidr(daemon: Daemon) -> None:
    _update(daemon, "10.88.0.0/16")
    assert _pod_cidr(daemon) == "10.88.0.0/16"
    _update(daemon, "")  # empty means no change
    assert _pod_cidr(daemon) == "10.88.0.0/16"
    daemon.restart()
    assert _pod_cidr(daemon) == "10.88.0.0/16"
    _update(daemon, "10.89.0.0/16,fd00:10::/64")  # dual-stack
    assert _pod_cidr(daemon) == "10.89.0.0/16,fd00:10::/64"


@pytest.mark.parametrize("cidr", ["not-a-cidr", "10.0.0.0/40", "10.0.0.0/8,10.1.0.0/16"])
def test_update_runtime_config_rejects_bad_cidr(daemon: Daemon, cidr: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _update(daemon, cidr)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CIDR" in (err.value.details() or "")
    assert _pod_cidr(daemon) == ""  # nothing half-applied
    daemon.runtime.Version(api.VersionRequest())  # and the daemon keeps serving


def test_status_claims_user_namespaces_as_the_host_probe_finds(
    shared_daemon: Daemon, tmp_path: pathlib.Path
) -> None:
    # The same probe the daemon ran at start-up: a user namespace, idmapped dir, overlay on it.
    can = user_namespace.probe(str(tmp_path / "probe")) == ""
    response = shared_daemon.runtime.Status(api.StatusRequest())
    assert [h.features.user_namespaces for h in response.runtime_handlers] == [can] * len(
        response.runtime_handlers
    )


def test_status_advertises_supplemental_groups_policy(shared_daemon: Daemon) -> None:
    assert shared_daemon.runtime.Status(api.StatusRequest()).features.supplemental_groups_policy


def test_status_verbose_says_which_runtime_is_the_default_and_why(
    make_daemon: Callable[..., Daemon],
) -> None:
    d = make_daemon()
    info = d.runtime.Status(api.StatusRequest(verbose=True)).info
    runtimes = json.loads(info["runtimes"])
    assert runtimes["defaultRuntime"] == "crun"
    assert runtimes["reason"].startswith("auto: crun ran a probe container on this host")
    assert set(runtimes["handlers"]) == {"crun", "runc"}
    assert runtimes["handlers"]["crun"]["mountNamespace"].startswith("private mount namespace")
    assert "hugetlb" not in runtimes["handlers"]["crun"]["cgroupControllers"]
    assert json.loads(info["config"])["default_runtime"] == "crun"  # "auto" resolved
    # The runtime's namespace needs the state dir shared while the daemon runs; a stop with
    # no pods left undoes it, and the host keeps its cgroup mounts.
    with open("/proc/self/mountinfo") as f:
        assert any(line.split()[4] == d.state for line in f)
    assert d.stop() == 0
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    assert [m for m in mounts if m.startswith(d.base)] == []
    assert "/sys/fs/cgroup/unified" in mounts


def test_configured_default_runtime_is_used(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon('default_runtime = "runc"\n')
    runtimes = json.loads(d.runtime.Status(api.StatusRequest(verbose=True)).info["runtimes"])
    assert runtimes["defaultRuntime"] == "runc"
    assert runtimes["reason"] == "set by default_runtime in the config"

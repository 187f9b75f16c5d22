"""Pod networking end to end: TCP host↔pod and pod↔pod, port mappings, plugin errors, restart
survival, and no leaks after many cycles."""

from __future__ import annotations

import os
import sys
import time

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.sandbox.podnet import (
    PodNet,
    host_snapshot,
    info,
    mounts_under,
    pod_config,
    remove_pod,
    run_pod,
    status,
    stop_pod,
    tcp_from_host,
    tcp_from_netns,
    tcp_server_in,
)


def test_tcp_host_to_pod_and_pod_to_pod(daemon: Daemon, podnet: PodNet) -> None:
    a = run_pod(daemon, pod_config())
    b = run_pod(daemon, pod_config())
    ip_a, ip_b = status(daemon, a).status.network.ip, status(daemon, b).status.network.ip
    assert ip_a != ip_b
    ns_a, ns_b = info(daemon, a)["netNamespacePath"], info(daemon, b)["netNamespacePath"]
    with tcp_server_in(ns_a, 8080):
        assert tcp_from_host(ip_a, 8080).startswith("hello from pod")
        assert tcp_from_netns(ns_b, ip_a, 8080) == f"hello from pod {ip_b}"
    with tcp_server_in(ns_b, 9090):
        assert tcp_from_netns(ns_a, ip_b, 9090) == f"hello from pod {ip_a}"


def test_host_port_mapping_from_localhost(daemon: Daemon, podnet: PodNet) -> None:
    port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
    config = pod_config(
        port_mappings=[api.PortMapping(container_port=8080, host_port=port, host_ip="127.0.0.1")]
    )
    pod_id = run_pod(daemon, config)
    ns = info(daemon, pod_id)["netNamespacePath"]
    with tcp_server_in(ns, 8080):
        assert tcp_from_host("127.0.0.1", port).startswith("hello from pod")
    remove_pod(daemon, pod_id)


def test_plugin_error_reaches_caller_and_nothing_leaks(daemon: Daemon, podnet: PodNet) -> None:
    podnet.conflist(extra=[{"type": "portmap", "capabilities": {"portMappings": True}, "snat": 5}])
    before = host_snapshot(daemon, podnet)
    with pytest.raises(grpc.RpcError) as e:
        run_pod(daemon, pod_config())
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    assert "plugin type='portmap' failed (ADD)" in (e.value.details() or "")
    assert daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    after = host_snapshot(daemon, podnet)
    after["links"] = [x for x in after["links"] if x != podnet.bridge]  # the bridge may stay
    before["links"] = [x for x in before["links"] if x != podnet.bridge]
    assert after == before


def test_daemon_restart_keeps_pods_and_network(daemon: Daemon, podnet: PodNet) -> None:
    pod_id = run_pod(daemon, pod_config())
    ip = status(daemon, pod_id).status.network.ip
    ns = info(daemon, pod_id)["netNamespacePath"]
    daemon.restart()
    st = status(daemon, pod_id).status
    assert st.state == api.PodSandboxState.SANDBOX_READY and st.network.ip == ip
    with tcp_server_in(ns, 8080):
        assert tcp_from_host(ip, 8080).startswith("hello from pod")
    daemon.kill9()  # no graceful shutdown either
    daemon.start()
    assert status(daemon, pod_id).status.state == api.PodSandboxState.SANDBOX_READY
    remove_pod(daemon, pod_id)
    assert os.listdir(f"/sys/class/net/{podnet.bridge}/brif") == []
    assert not mounts_under(daemon.base)
    assert not os.listdir(os.path.join(daemon.root, "cni", "results"))


def test_no_leaks_after_100_cycles(daemon: Daemon, podnet: PodNet) -> None:
    """The reference portmap costs ~100 ms per call (iptables), so 90 cycles run on a
    bridge-only network and 10 with host ports; the network switch also proves a new conflist
    is picked up without a restart."""
    mapping = [api.PortMapping(container_port=80, host_port=31080 + os.getpid() % 1000)]

    def cycle(i: int, ports: bool) -> None:
        config = pod_config(name=f"leak-{i}", port_mappings=mapping if ports else [])
        if i % 10 == 0:
            config.linux.security_context.namespace_options.pid = api.NamespaceMode.POD
        pod_id = run_pod(daemon, config)
        stop_pod(daemon, pod_id)
        remove_pod(daemon, pod_id)

    cycle(0, True)  # first use creates the bridge and portmap's top-level chains, which stay
    before = host_snapshot(daemon, podnet)
    started = time.monotonic()
    podnet.conflist(portmap=False)
    for i in range(1, 91):
        cycle(i, False)
    podnet.conflist(portmap=True)
    for i in range(91, 101):
        cycle(i, True)
    elapsed = time.monotonic() - started
    after = host_snapshot(daemon, podnet)
    assert after == before
    assert elapsed < 60, f"100 cycles took {elapsed:.1f}s"


_SLOW_PLUGIN = """#!{python}
import json, sys, time
conf = json.load(sys.stdin)
time.sleep(1.0)
print(json.dumps(conf.get("prevResult") or {{}}))
"""


def test_retry_after_client_timeout_gets_the_first_calls_pod(
    daemon: Daemon, podnet: PodNet
) -> None:
    path = os.path.join(daemon.cni_bin_dir, "slow-pass")
    with open(path, "w") as f:
        f.write(_SLOW_PLUGIN.format(python=sys.executable))
    os.chmod(path, 0o755)
    podnet.conflist(portmap=False, extra=[{"type": "slow-pass"}])
    config = pod_config()
    request = api.RunPodSandboxRequest(config=config)
    with pytest.raises(grpc.RpcError) as e:
        daemon.runtime.RunPodSandbox(request, timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The retry joins the creation still under way instead of failing with "name reserved".
    pod_id = daemon.runtime.RunPodSandbox(request, timeout=10).pod_sandbox_id
    assert status(daemon, pod_id).status.state == api.PodSandboxState.SANDBOX_READY
    assert daemon.runtime.RunPodSandbox(request, timeout=10).pod_sandbox_id == pod_id
    assert [p.id for p in daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items] == [
        pod_id
    ]


def test_daemon_killed_mid_creation_cleans_up_on_restart(daemon: Daemon, podnet: PodNet) -> None:
    path = os.path.join(daemon.cni_bin_dir, "slow-pass")
    with open(path, "w") as f:
        f.write(_SLOW_PLUGIN.format(python=sys.executable))
    os.chmod(path, 0o755)
    podnet.conflist(portmap=False, extra=[{"type": "slow-pass"}])
    run_pod(daemon, pod_config())  # the bridge exists from now on
    before = host_snapshot(daemon, podnet)
    with pytest.raises(grpc.RpcError):
        daemon.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=pod_config()), timeout=0.4)
    daemon.kill9()  # while slow-pass runs: namespaces pinned, IP reserved, veth made
    daemon.start()
    # Recovery runs before the first verb; Stop of an unknown pod is such a verb.
    stop_pod(daemon, "0" * 64)
    assert len(daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items) == 1
    assert host_snapshot(daemon, podnet) == before

"""The project's own plugins (cni/) in a conflist, run in-process by the daemon, mixed with
Debian's reference plugins in both directions."""

from __future__ import annotations

import pytest

from tests.conftest import Daemon
from tests.sandbox.podnet import (
    PodNet,
    host_snapshot,
    info,
    install_own,
    pod_config,
    remove_pod,
    run_pod,
    status,
    tcp_from_host,
    tcp_from_netns,
    tcp_server_in,
)

cni = pytest.importorskip("cni")


@pytest.mark.parametrize(
    ("bridge", "ipam"),
    [("criruntime-bridge", "criruntime-host-local"), ("criruntime-bridge", "host-local"),
     ("bridge", "criruntime-host-local")],
)  # fmt: skip
def test_own_plugins_in_process(daemon: Daemon, podnet: PodNet, bridge: str, ipam: str) -> None:
    install_own(daemon, *cni.BUILTIN_TYPES)
    podnet.conflist(bridge_type=bridge, ipam_type=ipam)
    a = run_pod(daemon, pod_config())
    before = host_snapshot(daemon, podnet)
    b = run_pod(daemon, pod_config())
    ip_a, ip_b = status(daemon, a).status.network.ip, status(daemon, b).status.network.ip
    ns_a, ns_b = info(daemon, a)["netNamespacePath"], info(daemon, b)["netNamespacePath"]
    with tcp_server_in(ns_a, 8080):
        assert tcp_from_host(ip_a, 8080).startswith("hello from pod")
        assert tcp_from_netns(ns_b, ip_a, 8080) == f"hello from pod {ip_b}"
    remove_pod(daemon, b)
    assert host_snapshot(daemon, podnet) == before
    # A reference bridge execs its IPAM itself; our own top-level plugins run in the daemon.
    assert ("cni ADD criruntime-bridge (in-process)" in daemon.logs()) == bridge.startswith(
        "criruntime-"
    )

"""Operation metrics on the Prometheus endpoint: latency by operation (pods, CNI), failures, and
pods by state, scraped from the real daemon."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.observability import metrics
from tests.conftest import Daemon
from tests.sandbox.podnet import PodNet, pod_config, remove_pod, run_pod, stop_pod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) (\S+)$", line)
        if m and not line.startswith("#"):
            samples[m.group(1)] = float(m.group(2))
    return samples


def test_pod_and_cni_operations_and_states(make_daemon: Callable[..., Daemon]) -> None:
    port = free_port()
    d = make_daemon(f'[metrics]\naddress = "127.0.0.1:{port}"\n')
    net = PodNet(d)
    net.link_plugins("bridge", "host-local", "portmap", "loopback")
    net.conflist()
    try:
        a, b = run_pod(d, pod_config()), run_pod(d, pod_config())
        stop_pod(d, b)
        samples = scrape(port)
        count = 'criruntime_operation_duration_seconds_count{operation="%s"}'
        assert samples[count % "sandbox_run"] == 2
        assert samples[count % "cni_add"] == 2
        assert samples[count % "sandbox_stop"] == 1
        assert samples[count % "cni_del"] == 1
        assert samples['criruntime_pods{state="ready"}'] == 1
        assert samples['criruntime_pods{state="notready"}'] == 1
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            d.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=api.PodSandboxConfig()))
        samples = scrape(port)
        assert samples['criruntime_operation_errors_total{operation="sandbox_run"}'] == 1
        assert samples[count % "sandbox_run"] == 2
        remove_pod(d, a)
        remove_pod(d, b)
        assert 'criruntime_pods{state="ready"}' not in scrape(port)
    finally:
        net.cleanup()


def test_timed_counts_latency_and_failures() -> None:
    @metrics.timed("test_op")
    async def op(fail: bool) -> int:
        if fail:
            raise ValueError("no")
        return 7

    def value(name: str) -> float:
        found = REGISTRY.get_sample_value(name, {"operation": "test_op"})
        return found or 0.0

    before = value("criruntime_operation_duration_seconds_count")
    errors = value("criruntime_operation_errors_total")
    assert asyncio.run(op(False)) == 7
    with pytest.raises(ValueError):
        asyncio.run(op(True))
    assert value("criruntime_operation_duration_seconds_count") == before + 1
    assert value("criruntime_operation_errors_total") == errors + 1

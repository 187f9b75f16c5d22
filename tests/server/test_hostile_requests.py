"""Hostile requests through the real daemon: each input that used to fall through to INTERNAL,
answer UNKNOWN with Python's words, echo megabytes back, or reach CNI_ARGS unescaped now gets a
clear INVALID_ARGUMENT with a short message, before anything was made, and the daemon answers
Version afterwards. Container-level inputs (a FIFO seccomp profile, ...) are in
tests/container/test_hostile_containers.py."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.server.interceptor import MAX_DETAILS
from tests.conftest import Daemon

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details() or ""


def pod(name: str = "p", namespace: str = "ns", **kw: Any) -> api.RunPodSandboxRequest:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace=namespace, uid="u"), **kw
    )
    config.linux.security_context.namespace_options.network = api.NamespaceMode.NODE
    return api.RunPodSandboxRequest(config=config)


def with_resources(**kw: int | str) -> api.RunPodSandboxRequest:
    request = pod()
    request.config.linux.resources.CopyFrom(api.LinuxContainerResources(**kw))  # type: ignore[arg-type]
    return request


def assert_no_pods(daemon: Daemon) -> None:
    assert not daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items


HOSTILE_PODS = {
    "pod cpu_quota 500": (with_resources(cpu_quota=500), "cpu_quota"),
    "pod cpu_period 10": (with_resources(cpu_period=10), "cpu_period"),
    "swap below memory": (
        with_resources(memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=1 << 20),
        "memory_swap_limit_in_bytes",
    ),
    "cpuset 0-2000000": (with_resources(cpuset_cpus="0-2000000"), "cpuset_cpus"),
    "63-character hostname over 64 bytes": (pod(hostname="é" * 63), "hostname"),
    "port protocol 7": (
        pod(port_mappings=[api.PortMapping(protocol=7, container_port=80)]),  # type: ignore[arg-type]
        "protocol is 7",
    ),
    "ingress-bandwidth 1.2.3M": (
        pod(annotations={"kubernetes.io/ingress-bandwidth": "1.2.3M"}),
        "bandwidth",
    ),
    "egress-bandwidth of 400 nines": (
        pod(annotations={"kubernetes.io/egress-bandwidth": "9" * 400}),
        "bandwidth",
    ),
    "200,000-character pod name": (pod(name="n" * 200_000), "metadata.name"),
    "namespace that injects into CNI_ARGS": (pod(namespace="x;IP=10.98.213.250"), "';'"),
    "uid that injects into CNI_ARGS": (pod(name="a=b"), "'='"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PODS))
def test_hostile_pods_are_invalid_argument_before_anything_is_made(
    shared_daemon: Daemon, case: str
) -> None:
    request, field = HOSTILE_PODS[case]
    started = time.monotonic()
    code, details = code_of(lambda: shared_daemon.runtime.RunPodSandbox(request, timeout=10))
    assert code == INVALID, details
    assert field in details and len(details) <= 300, details
    assert "internal error" not in details and "Traceback" not in details
    assert time.monotonic() - started < 5  # validation, not work: fast even on a busy host
    assert_no_pods(shared_daemon)
    shared_daemon.runtime.Version(api.VersionRequest(), timeout=5)


def test_stop_signal_1234_is_invalid_argument(shared_daemon: Daemon) -> None:
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="c"),
        image=api.ImageSpec(image="busybox"),
        stop_signal=1234,  # type: ignore[arg-type]
    )
    request = api.CreateContainerRequest(pod_sandbox_id="0" * 64, config=config)
    code, details = code_of(lambda: shared_daemon.runtime.CreateContainer(request, timeout=10))
    assert code == INVALID and "config.stop_signal is 1234, not a Signal" in details


def test_registry_token_with_control_characters_is_invalid_argument(shared_daemon: Daemon) -> None:
    request = api.PullImageRequest(
        image=api.ImageSpec(image="127.0.0.1:1/x:1"),
        auth=api.AuthConfig(registry_token="tok\r\nX-Injected: 1"),
    )
    code, details = code_of(lambda: shared_daemon.image.PullImage(request, timeout=10))
    assert code == INVALID and "auth.registry_token" in details and "control character" in details


@pytest.mark.parametrize(
    "method",
    [
        "/runtime.v1.RuntimeService/Version",
        "/runtime.v1.RuntimeService/RunPodSandbox",
        "/runtime.v1.RuntimeService/CreateContainer",
        "/runtime.v1.ImageService/PullImage",
        "/runtime.v1.RuntimeService/GetContainerEvents",  # server-streaming
    ],
)
@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08" + b"\xff" * 11])
def test_an_undecodable_body_is_invalid_argument(
    shared_daemon: Daemon, method: str, body: bytes
) -> None:
    assert shared_daemon.channel is not None
    if method.endswith("GetContainerEvents"):
        call = shared_daemon.channel.unary_stream(method, None, None)
        code, details = code_of(lambda: list(call(body, timeout=10)))
    else:
        unary = shared_daemon.channel.unary_unary(method, None, None)
        code, details = code_of(lambda: unary(body, timeout=10))
    assert code == INVALID, details
    assert "not a valid protobuf message" in details
    assert "Error" not in details and "Traceback" not in details
    shared_daemon.runtime.Version(api.VersionRequest(), timeout=5)


def test_a_megabyte_id_gets_a_short_status(shared_daemon: Daemon) -> None:
    big = "a" * (1 << 20)
    for call in (
        lambda: shared_daemon.runtime.ContainerStatus(
            api.ContainerStatusRequest(container_id=big), timeout=10
        ),
        lambda: shared_daemon.runtime.StopPodSandbox(
            api.StopPodSandboxRequest(pod_sandbox_id=big), timeout=10
        ),
        lambda: shared_daemon.image.ImageStatus(
            api.ImageStatusRequest(image=api.ImageSpec(image=big)), timeout=10
        ),
    ):
        code, details = code_of(call)
        assert code == INVALID and len(details) <= MAX_DETAILS, details[:200]


def test_ids_that_could_meet_a_path_are_invalid_argument(shared_daemon: Daemon) -> None:
    for bad in ("../../etc", "a%", "x/y", "a\nb"):
        code, details = code_of(
            lambda bad=bad: shared_daemon.runtime.StartContainer(  # type: ignore[misc]
                api.StartContainerRequest(container_id=bad), timeout=10
            )
        )
        assert code == INVALID and "container_id" in details, details


def test_valid_pods_still_run(shared_daemon: Daemon) -> None:
    # The bounds leave what kubelet and critest send alone.
    request = pod(
        name="web-" + "x" * 200,
        namespace="kube-system",
        hostname="h" * 63,
        annotations={"kubernetes.io/ingress-bandwidth": "10M", "note": "line1\nline2"},
        port_mappings=[api.PortMapping(protocol=api.Protocol.UDP, container_port=53)],
        log_directory=os.path.join(shared_daemon.base, "logs"),
    )
    request.config.linux.resources.cpu_quota = 50_000
    request.config.linux.resources.cpu_period = 100_000
    pod_id = shared_daemon.runtime.RunPodSandbox(request, timeout=30).pod_sandbox_id
    try:
        assert len(pod_id) == 64
    finally:
        shared_daemon.runtime.StopPodSandbox(
            api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30
        )
        shared_daemon.runtime.RemovePodSandbox(
            api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30
        )

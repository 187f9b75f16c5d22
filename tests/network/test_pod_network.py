"""CRI → CNI mapping: capability args and CNI_ARGS."""

from __future__ import annotations

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument
from criruntime.network.pod_network import capability_args, cni_args, parse_quantity


def test_capability_args() -> None:
    config = api.PodSandboxConfig(
        port_mappings=[
            api.PortMapping(container_port=80, host_port=8080, host_ip="127.0.0.1"),
            api.PortMapping(protocol=api.Protocol.UDP, container_port=53, host_port=5353),
            api.PortMapping(container_port=9000),  # no host port: not mapped
        ],
        annotations={
            "kubernetes.io/ingress-bandwidth": "10M",
            "kubernetes.io/egress-bandwidth": "1Mi",
        },
    )
    caps = capability_args(config, ["10.88.0.0/16", "fd00::/64"])
    assert caps["portMappings"] == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
    ]
    assert caps["bandwidth"] == {
        "ingressRate": 10_000_000,
        "ingressBurst": 2**32 - 1,
        "egressRate": 1 << 20,
        "egressBurst": 2**32 - 1,
    }
    assert caps["ipRanges"] == [[{"subnet": "10.88.0.0/16"}], [{"subnet": "fd00::/64"}]]
    assert capability_args(api.PodSandboxConfig(), []) == {"portMappings": []}


def test_bad_bandwidth_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        parse_quantity("lots")


def test_cni_args() -> None:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="p", namespace="ns", uid="u1")
    )
    assert dict(cni_args("sid", config)) == {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": "ns",
        "K8S_POD_NAME": "p",
        "K8S_POD_INFRA_CONTAINER_ID": "sid",
        "K8S_POD_UID": "u1",
    }

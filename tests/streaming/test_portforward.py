"""Port-forward over SPDY and WebSocket into real pods: a port bound only on the pod's loopback
(CNI pod), a host-network pod, a refused port that leaves the session alive, many connections
at once, and SPDY tunnelled in WebSocket as kubectl and crictl dial it."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.container.daemon_env import Cluster, container_config, sh, wait_for
from tests.sandbox.podnet import PodNet, pod_config
from tests.streaming.clients import SpdyClient, WsClient, spdy_exec
from tests.streaming.conftest import exec_url, portforward_url, run

HTTP_GET = b"GET / HTTP/1.0\r\n\r\n"
PAGE = "hello-from-pod"


@pytest.fixture(scope="module")
def net(sd: Daemon) -> Iterator[PodNet]:
    podnet = PodNet(sd)
    podnet.link_plugins("bridge", "host-local", "loopback")
    podnet.conflist(portmap=False)
    try:
        yield podnet
    finally:
        podnet.cleanup()


def web(cl: Cluster, image: str, pod_id: str, bind: str) -> str:
    """busybox httpd on `bind` (HOST:PORT), serving PAGE; returns the container id."""
    script = f"mkdir -p /www; echo {PAGE} > /www/index.html; exec httpd -f -p {bind} -h /www"
    cid = cl.run(pod_id, container_config(image, name="web", **sh(script)))

    def listening() -> bool:
        probe = f"nc -w 1 {bind.replace(':', ' ')} < /dev/null"
        return run(spdy_exec(exec_url(cl, cid, ["sh", "-c", probe]))).exit_code == 0

    wait_for(listening, what="httpd listening")
    return cid


async def forward_once(
    client: SpdyClient, port: int, request_id: str, payload: bytes
) -> tuple[bytes, bytes]:
    error = await client.open({"streamtype": "error", "port": str(port), "requestid": request_id})
    data = await client.open({"streamtype": "data", "port": str(port), "requestid": request_id})
    if payload:
        await client.send(data, payload)
    return await data.wait_fin(), await error.wait_fin()


def cni_pod(cl: Cluster) -> str:
    config = pod_config()
    pod_id = str(
        cl.rt.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    )
    cl.pods[pod_id] = config
    return pod_id


def test_spdy_port_forward_reaches_the_pod_loopback(
    cl: Cluster, image_ref: str, net: PodNet
) -> None:
    pod_id = cni_pod(cl)
    web(cl, image_ref, pod_id, "127.0.0.1:8080")

    async def session() -> list[tuple[bytes, bytes]]:
        client, protocol = await SpdyClient.connect(
            portforward_url(cl, pod_id), ["portforward.k8s.io"]
        )
        assert protocol == "portforward.k8s.io"
        try:
            refused = await forward_once(client, 8081, "0", b"")
            ok = await forward_once(client, 8080, "1", HTTP_GET)
            many = await asyncio.gather(
                *(forward_once(client, 8080, str(i), HTTP_GET) for i in range(2, 42))
            )
            await client.ping(7)
            await asyncio.sleep(0.2)
            assert 7 in client.pings  # the session answers pings (kubectl sends them)
            return [refused, ok, *many]
        finally:
            await client.close()

    results = run(session())
    refused_data, refused_error = results[0]
    assert b"8081" in refused_error and b"refused" in refused_error and refused_data == b""
    for data, error in results[1:]:
        assert PAGE.encode() in data and error == b""


def test_spdy_port_forward_to_a_host_network_pod(cl: Cluster, image_ref: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pod_id = cl.run_pod()  # host network
    web(cl, image_ref, pod_id, f"127.0.0.1:{port}")

    async def session() -> tuple[bytes, bytes]:
        client, _ = await SpdyClient.connect(portforward_url(cl, pod_id), ["portforward.k8s.io"])
        try:
            return await forward_once(client, port, "r", HTTP_GET)
        finally:
            await client.close()

    data, error = run(session())
    assert PAGE.encode() in data and error == b""


def test_spdy_port_forward_pairs_by_stream_id_without_request_ids(
    cl: Cluster, image_ref: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pod_id = cl.run_pod()
    web(cl, image_ref, pod_id, f"127.0.0.1:{port}")

    async def session() -> bytes:
        client, _ = await SpdyClient.connect(portforward_url(cl, pod_id), ["portforward.k8s.io"])
        try:
            await client.open({"streamtype": "error", "port": str(port)})
            data = await client.open({"streamtype": "data", "port": str(port)})
            await client.send(data, HTTP_GET)
            return await data.wait_fin()
        finally:
            await client.close()

    assert PAGE.encode() in run(session())


def test_websocket_port_forward_channels(cl: Cluster, image_ref: str, net: PodNet) -> None:
    pod_id = cni_pod(cl)
    web(cl, image_ref, pod_id, "127.0.0.1:8080")

    async def session() -> bytes:
        url = portforward_url(cl, pod_id) + "?port=8080"
        client, protocol = await WsClient.connect(url, ["portforward.k8s.io"])
        assert protocol == "portforward.k8s.io"
        try:
            first, second = await client.receive(), await client.receive()
            # Each channel starts with the port, little endian.
            assert {first, second} == {
                b"\x00" + struct.pack("<H", 8080),
                b"\x01" + struct.pack("<H", 8080),
            }
            await client.send(b"\x00" + HTTP_GET)
            body = b""
            while PAGE.encode() not in body:
                message = await client.receive()
                assert isinstance(message, bytes)
                if message[0] == 0:
                    body += message[1:]
            return body
        finally:
            await client.close()

    assert PAGE.encode() in run(session())


def test_spdy_tunnelled_in_websocket(cl: Cluster, image_ref: str, net: PodNet) -> None:
    pod_id = cni_pod(cl)
    web(cl, image_ref, pod_id, "127.0.0.1:8080")

    async def session() -> tuple[bytes, bytes]:
        ws, protocol = await WsClient.connect(
            portforward_url(cl, pod_id), ["SPDY/3.1+portforward.k8s.io"]
        )
        assert protocol == "SPDY/3.1+portforward.k8s.io"
        # SPDY frames travel as binary messages; bridge them to a local socket pair so the
        # same SPDY client runs over the tunnel.
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        t_reader, t_writer = await asyncio.open_connection(sock=theirs)

        async def up() -> None:
            while data := await t_reader.read(65536):
                await ws.send(data)

        async def down() -> None:
            while (message := await ws.receive()) is not None:
                assert isinstance(message, bytes)
                t_writer.write(message)
                await t_writer.drain()

        pumps = [asyncio.create_task(up()), asyncio.create_task(down())]
        client = SpdyClient(reader, writer)
        try:
            return await forward_once(client, 8080, "t", HTTP_GET)
        finally:
            await client.close()
            for p in pumps:
                p.cancel()
            await ws.close()
            t_writer.close()

    data, error = run(session())
    assert PAGE.encode() in data and error == b""


def test_port_forward_rpc_validation(cl: Cluster) -> None:
    with pytest.raises(grpc.RpcError) as e:
        cl.rt.PortForward(api.PortForwardRequest(pod_sandbox_id="d" * 64), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    pod_id = cl.run_pod()
    with pytest.raises(grpc.RpcError) as e:
        cl.rt.PortForward(api.PortForwardRequest(pod_sandbox_id=pod_id, port=[70000]), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    cl.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
    with pytest.raises(grpc.RpcError) as e:
        cl.rt.PortForward(api.PortForwardRequest(pod_sandbox_id=pod_id), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION

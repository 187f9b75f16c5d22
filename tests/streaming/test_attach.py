"""Attach through conmon's attach socket: stdin_once, several clients at once, terminals."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.container.daemon_env import Cluster, read_log, wait_for
from tests.streaming.clients import SpdyClient, WsClient, spdy_exec
from tests.streaming.conftest import attach_url, run, start

EXITED = api.ContainerState.CONTAINER_EXITED


def test_attach_stdin_once_gives_the_process_eof(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, "echo started; cat; echo cat-done", stdin=True, stdin_once=True)
    wait_for(lambda: ("stdout", "F", "started") in read_log(cl.log_file(next(iter(cl.pods)))))
    result = run(spdy_exec(attach_url(cl, cid, stdin=True, stderr=True), stdin=b"typed\n"))
    assert b"typed\n" in result.stdout and b"cat-done" in result.stdout
    assert result.status == {"metadata": {}, "status": "Success"}
    cl.wait_state(cid, EXITED)


def test_several_attaches_see_the_output(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, "read x; for i in 1 2 3; do echo tick$i; done", stdin=True)

    async def two() -> tuple[bytes, bytes]:
        async def watcher() -> tuple[SpdyClient, object]:
            client, _ = await SpdyClient.connect(attach_url(cl, cid), ["v4.channel.k8s.io"])
            await client.open({"streamtype": "error"})
            out = await client.open({"streamtype": "stdout"})
            return client, out

        (c1, out1), (c2, out2) = await watcher(), await watcher()
        await asyncio.sleep(0.2)  # both attached before the output starts
        writer, _ = await SpdyClient.connect(
            attach_url(cl, cid, stdin=True, stdout=False), ["v4.channel.k8s.io"]
        )
        await writer.open({"streamtype": "error"})
        stdin = await writer.open({"streamtype": "stdin"})
        await writer.send(stdin, b"go\n")
        try:
            got = []
            for out in (out1, out2):
                got.append(await out.read_until(b"tick3"))  # type: ignore[attr-defined]
            return got[0], got[1]
        finally:
            for c in (c1, c2, writer):
                await c.close()

    first, second = run(two())
    assert b"tick1\ntick2\ntick3\n" in first and b"tick1\ntick2\ntick3\n" in second


def test_attach_tty_resize_through_conmon(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, "while true; do read x; stty size; done", stdin=True, tty=True)

    async def session() -> bytes:
        client, _ = await SpdyClient.connect(
            attach_url(cl, cid, stdin=True, tty=True), ["v4.channel.k8s.io"]
        )
        try:
            await client.open({"streamtype": "error"})
            stdin = await client.open({"streamtype": "stdin"})
            out = await client.open({"streamtype": "stdout"})
            resize = await client.open({"streamtype": "resize"})
            await client.send(resize, b'{"Width":111,"Height":22}')
            await asyncio.sleep(0.3)
            await client.send(stdin, b"\r")
            return await out.read_until(b"22 111")
        finally:
            await client.close()

    assert b"22 111" in run(session())


def test_websocket_attach(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, "read x; echo got-$x; sleep 1000", stdin=True)
    url = attach_url(cl, cid, stdin=True)

    async def session() -> bytes:

        client, _ = await WsClient.connect(url, ["v5.channel.k8s.io"])
        try:
            await client.send(bytes([0]) + b"ws\n")
            out = b""
            while b"got-ws" not in out:
                message = await client.receive()
                assert isinstance(message, bytes)
                if message[0] == 1:
                    out += message[1:]
            return out
        finally:
            await client.close()

    assert b"got-ws" in run(session())


def test_attach_rpc_validation(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, "exec sleep 1000")
    with pytest.raises(grpc.RpcError) as e:
        cl.rt.Attach(api.AttachRequest(container_id=cid), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        cl.rt.Attach(api.AttachRequest(container_id="e" * 64, stdout=True), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    cl.stop(cid)
    with pytest.raises(grpc.RpcError) as e:
        cl.rt.Attach(api.AttachRequest(container_id=cid, stdout=True), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION

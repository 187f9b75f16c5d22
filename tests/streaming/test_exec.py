"""Exec through the streaming server with the tests' own SPDY and WebSocket clients, against real
containers: output, exit codes, stdin EOF, terminals and resize, every protocol version, tokens."""

from __future__ import annotations

import asyncio
import json
import struct
import urllib.request
from typing import Any

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.streaming import spdy
from tests.container.daemon_env import Cluster
from tests.streaming.clients import SpdyClient, UpgradeRefused, WsClient, spdy_exec, ws_exec
from tests.streaming.conftest import exec_url, run, start

SLEEP = "exec sleep 1000"


def rpc_code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()  # type: ignore[operator]
    return e.value.code(), e.value.details() or ""


def test_exec_rpc_validates_and_returns_an_absolute_url(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)
    url = exec_url(cl, cid[:12], ["true"])
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url
    status = cl.rt.Status(api.StatusRequest(verbose=True), timeout=10)
    assert url.startswith(json.loads(status.info["streaming"])["address"])

    def exec_(**kw: Any) -> object:
        return lambda: cl.rt.Exec(api.ExecRequest(**kw), timeout=10)

    code, msg = rpc_code(exec_(container_id=cid, cmd=["true"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "stdin, stdout or stderr" in msg
    code, msg = rpc_code(exec_(container_id=cid, cmd=["true"], tty=True, stdout=True, stderr=True))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tty" in msg
    code, _ = rpc_code(exec_(container_id=cid, cmd=[], stdout=True))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = rpc_code(exec_(container_id="f" * 64, cmd=["true"], stdout=True))
    assert code == grpc.StatusCode.NOT_FOUND
    cl.stop(cid)
    code, msg = rpc_code(exec_(container_id=cid, cmd=["true"], stdout=True))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not running" in msg


def test_spdy_exec_output_and_exit_codes(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)
    url = exec_url(cl, cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    result = run(spdy_exec(url))
    assert result.stdout == b"out\n" and result.stderr == b"err\n"
    assert result.status is not None and result.status["status"] == "Failure"
    assert result.status["reason"] == "NonZeroExitCode"
    assert result.exit_code == 3
    ok = run(spdy_exec(exec_url(cl, cid, ["echo", "hi"]), protocol="v5.channel.k8s.io"))
    assert ok.stdout == b"hi\n" and ok.status == {"metadata": {}, "status": "Success"}
    # Killed by a signal: 128 + N, as runc and kubelet report it.
    killed = run(spdy_exec(exec_url(cl, cid, ["sh", "-c", "kill -9 $$"])))
    assert killed.exit_code == 137
    missing = run(spdy_exec(exec_url(cl, cid, ["/no/such/binary"])))
    assert missing.exit_code != 0


@pytest.mark.parametrize("protocol", ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"])
def test_spdy_exec_older_protocols_report_failures_as_text(
    cl: Cluster, image_ref: str, protocol: str
) -> None:
    cid = start(cl, image_ref, SLEEP)
    result = run(spdy_exec(exec_url(cl, cid, ["sh", "-c", "echo x; exit 2"]), protocol=protocol))
    assert result.stdout == b"x\n"
    assert b"non-zero exit code" in result.raw_error and b"2" in result.raw_error


def test_spdy_exec_stdin_eof_reaches_the_process(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)
    data = b"line\n" * 20000  # larger than a flow-control window
    result = run(spdy_exec(exec_url(cl, cid, ["wc", "-c"], stdin=True), stdin=data))
    assert result.stdout.strip() == str(len(data)).encode() and result.exit_code == 0
    echoed = run(spdy_exec(exec_url(cl, cid, ["cat"], stdin=True), stdin=b"hello"))
    assert echoed.stdout == b"hello"


def test_spdy_exec_ends_when_the_process_exits_with_stdin_still_open(
    cl: Cluster, image_ref: str
) -> None:
    cid = start(cl, image_ref, SLEEP)
    url = exec_url(cl, cid, ["sh", "-c", "echo bye"], stdin=True)
    result = run(asyncio.wait_for(spdy_exec(url, stdin=b"", keep_stdin_open=True), 15))
    assert result.stdout == b"bye\n" and result.exit_code == 0


def test_spdy_exec_tty_size_resize_and_eof(runc_cl: Cluster, image_ref: str) -> None:
    cid = start(runc_cl, image_ref, SLEEP)
    result = run(
        spdy_exec(
            exec_url(runc_cl, cid, ["sh", "-c", "tty; stty size; exit 4"], tty=True, stdin=True),
            stdin=b"",
            keep_stdin_open=True,
            tty=True,
            size=(123, 45),
        )
    )
    assert b"/dev/pts/" in result.stdout and b"45 123" in result.stdout
    assert result.exit_code == 4

    async def resize_later() -> bytes:
        url = exec_url(runc_cl, cid, ["sh", "-c", "read x; stty size"], tty=True, stdin=True)
        client, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        try:
            error = await client.open({"streamtype": "error"})
            stdin = await client.open({"streamtype": "stdin"})
            out = await client.open({"streamtype": "stdout"})
            resize = await client.open({"streamtype": "resize"})
            await client.send(resize, b'{"Width":80,"Height":24}')
            await asyncio.sleep(0.3)
            await client.send(resize, b'{"Width":132,"Height":50}\n')
            await asyncio.sleep(0.3)
            await client.send(stdin, b"go\r")
            await error.wait_fin()
            return await out.wait_fin()
        finally:
            await client.close()

    assert b"50 132" in run(resize_later())
    # Closing stdin ends a terminal's input: cat sees EOF and exits.
    typed = run(
        spdy_exec(
            exec_url(runc_cl, cid, ["cat"], tty=True, stdin=True),
            stdin=b"abc\r",
            tty=True,
            size=(80, 24),
        )
    )
    assert b"abc" in typed.stdout and typed.exit_code == 0


def test_tokens_are_single_use_and_unknown_ones_refused(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)
    url = exec_url(cl, cid, ["true"])
    run(spdy_exec(url))
    with pytest.raises(UpgradeRefused) as e:
        run(spdy_exec(url))
    assert e.value.status == 404
    with pytest.raises(UpgradeRefused) as e:
        run(spdy_exec(url.rsplit("/", 1)[0] + "/not-a-token"))
    assert e.value.status == 404
    # An attach token is no exec token.
    with pytest.raises(UpgradeRefused):
        run(spdy_exec(exec_url(cl, cid, ["true"]).replace("/exec/", "/attach/")))
    with pytest.raises(UpgradeRefused) as e:
        run(spdy_exec(exec_url(cl, cid, ["true"]), protocol="v9.channel.k8s.io"))
    assert e.value.status == 403
    with pytest.raises(urllib.request.HTTPError) as http:
        urllib.request.urlopen(exec_url(cl, cid, ["true"]), timeout=5)
    assert http.value.code == 400


@pytest.mark.parametrize(
    "protocol",
    ["v5.channel.k8s.io", "v4.channel.k8s.io", "base64.channel.k8s.io", "channel.k8s.io"],
)
def test_websocket_exec(cl: Cluster, image_ref: str, protocol: str) -> None:
    cid = start(cl, image_ref, SLEEP)
    url = exec_url(cl, cid, ["sh", "-c", "echo out; echo err >&2; exit 5"])
    channels, _ = run(ws_exec(url, protocol))
    assert channels[1] == b"out\n" and channels[2] == b"err\n"
    if protocol.startswith(("v4", "v5")):
        status = json.loads(channels[3])
        assert status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
    else:
        assert b"non-zero exit code" in channels[3]


def test_websocket_v5_close_signal_is_stdin_eof(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)
    url = exec_url(cl, cid, ["wc", "-c"], stdin=True, stderr=False)
    channels, _ = run(ws_exec(url, "v5.channel.k8s.io", stdin=b"12345"))
    assert channels[1].strip() == b"5"
    assert json.loads(channels[3])["status"] == "Success"


def test_websocket_exec_tty(runc_cl: Cluster, image_ref: str) -> None:
    cid = start(runc_cl, image_ref, SLEEP)
    url = exec_url(runc_cl, cid, ["stty", "size"], tty=True, stdin=True)
    channels, _ = run(ws_exec(url, "v4.channel.k8s.io", size=(101, 33)))
    assert b"33 101" in channels[1]


def test_websocket_without_a_known_subprotocol_is_refused(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)
    with pytest.raises(UpgradeRefused):
        run(WsClient.connect(exec_url(cl, cid, ["true"]), ["v9.channel.k8s.io"]))


def test_spdy_send_windows_are_honoured_once_the_peer_does_flow_control(
    cl: Cluster, image_ref: str
) -> None:
    cid = start(cl, image_ref, SLEEP)
    url = exec_url(cl, cid, ["head", "-c", "5000", "/dev/zero"])

    async def session() -> tuple[int, int, bytes]:
        client, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        try:
            # SETTINGS_INITIAL_WINDOW_SIZE = 1000 bytes per stream.
            settings = struct.pack(">III", 1, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1000)
            client.send_raw(spdy.control_frame(spdy.SETTINGS, 0, settings))
            error = await client.open({"streamtype": "error"})
            out = await client.open({"streamtype": "stdout"})
            await client.open({"streamtype": "stderr"})
            await asyncio.sleep(1.0)
            held = out.received
            update = struct.pack(">II", out.id, 4000)
            client.send_raw(spdy.control_frame(spdy.WINDOW_UPDATE, 0, update))
            await out.wait_fin()
            return held, out.received, await error.wait_fin()
        finally:
            await client.close()

    held, total, status = run(session())
    assert held == 1000 and total == 5000
    assert json.loads(status)["status"] == "Success"


def test_stdin_eof_after_many_small_frames_is_not_lost(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)

    async def spdy_session() -> bytes:
        url = exec_url(cl, cid, ["sh", "-c", "sleep 1; wc -c"], stdin=True)
        client, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        try:
            error = await client.open({"streamtype": "error"})
            stdin = await client.open({"streamtype": "stdin"})
            out = await client.open({"streamtype": "stdout"})
            await client.open({"streamtype": "stderr"})
            for _ in range(200):  # far more frames than a stream's inbox holds
                client.send_raw(spdy.data_frame(stdin.id, 0, b"x" * 1000))
            await client.send(stdin, b"", fin=True)
            await error.wait_fin()
            return await out.wait_fin()
        finally:
            await client.close()

    assert run(spdy_session()).strip() == b"200000"

    async def ws_session() -> bytes:
        url = exec_url(cl, cid, ["sh", "-c", "sleep 1; wc -c"], stdin=True, stderr=False)
        client, _ = await WsClient.connect(url, ["v5.channel.k8s.io"])
        out = b""
        try:
            for _ in range(100):
                await client.send(b"\x00" + b"y" * 1000)
            await client.send(bytes([255, 0]))
            while (message := await client.receive()) is not None:
                assert isinstance(message, bytes)
                if message[:1] == b"\x01":
                    out += message[1:]
            return out
        finally:
            await client.close()

    assert run(ws_session()).strip() == b"100000"


def test_resize_reaches_a_terminal_on_the_default_handler(cl: Cluster, image_ref: str) -> None:
    """crun, unlike runc, does not pass SIGWINCH on: the daemon sizes the process's terminal
    itself. The process waits for input first, so its terminal is set up when it reads."""
    cid = start(cl, image_ref, SLEEP)

    async def session() -> bytes:
        url = exec_url(cl, cid, ["sh", "-c", "read x; stty size"], tty=True, stdin=True)
        client, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        try:
            error = await client.open({"streamtype": "error"})
            stdin = await client.open({"streamtype": "stdin"})
            out = await client.open({"streamtype": "stdout"})
            resize = await client.open({"streamtype": "resize"})
            await client.send(resize, b'{"Width":80,"Height":24}')
            await asyncio.sleep(0.3)
            await client.send(resize, b'{"Width":140,"Height":44}')
            await asyncio.sleep(0.3)
            await client.send(stdin, b"go\r")
            await error.wait_fin()
            return await out.wait_fin()
        finally:
            await client.close()

    assert b"44 140" in run(session())

"""Sessions that end badly: garbage frames, clients that vanish, and 200 sessions opened and
dropped in every way, after which the daemon holds no extra fd, thread or session and the
container no extra process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.streaming import spdy
from tests.conftest import Daemon
from tests.container.daemon_env import (
    Cluster,
    container_config,
    force_cleanup,
    pull,
    sh,
    wait_for,
)
from tests.streaming.clients import SpdyClient, UpgradeRefused, WsClient, spdy_exec, ws_exec
from tests.streaming.conftest import attach_url, exec_url, portforward_url, run, start

SLEEP = "exec sleep 1000"


def processes(cl: Cluster, cid: str) -> list[str]:
    """The container's processes (its own PID namespace), ps itself left out."""
    out = cl.exec(cid, "ps", "-o", "args").stdout.decode().splitlines()[1:]
    return [line.strip() for line in out if not line.strip().startswith("ps ")]


async def garbage_after_upgrade(url: str, garbage: bytes) -> tuple[bool, bool]:
    """Sends `garbage` on an upgraded session; returns (GOAWAY seen, connection closed)."""
    client, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
    try:
        client.send_raw(garbage)
        await asyncio.wait_for(client.closed.wait(), 10)
        return client.goaway.is_set(), client.closed.is_set()
    finally:
        await client.close()


def test_garbage_frames_reset_the_session_and_the_daemon_lives_on(
    cl: Cluster, image_ref: str
) -> None:
    cid = start(cl, image_ref, SLEEP)
    bad_version = struct.pack(">HHI", 0x8000 | 2, spdy.SYN_STREAM, 10) + b"\0" * 10
    huge_control = struct.pack(">HHI", 0x8000 | 3, spdy.SETTINGS, 0xFFFFFF)
    bad_zlib = spdy.control_frame(spdy.SYN_STREAM, 0, struct.pack(">IIBB", 1, 0, 0, 0) + b"junk")
    data_for_nothing = spdy.data_frame(99, 0, b"x")
    even_stream = spdy.control_frame(
        spdy.SYN_STREAM, 0, struct.pack(">IIBB", 2, 0, 0, 0) + spdy.HeaderCodec().encode({})
    )
    for garbage in (bad_version, huge_control, bad_zlib, data_for_nothing, even_stream):
        goaway, closed = run(garbage_after_upgrade(exec_url(cl, cid, ["sleep", "30"]), garbage))
        assert goaway and closed, garbage
    rng = random.Random(7)
    for _ in range(5):
        noise = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
        _, closed = run(
            garbage_after_upgrade(exec_url(cl, cid, ["sleep", "30"]), noise + b"\0" * 8)
        )
        assert closed
    # Nothing was started for those sessions, and the daemon still serves.
    assert processes(cl, cid) == ["sleep 1000"]
    assert run(spdy_exec(exec_url(cl, cid, ["echo", "alive"]))).stdout == b"alive\n"


def test_a_vanished_client_takes_its_process_along(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)

    async def vanish(url: str, tty: bool) -> None:
        client, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        await client.open({"streamtype": "error"})
        await client.open({"streamtype": "stdin"})
        await client.open({"streamtype": "stdout"})
        if tty:
            await client.open({"streamtype": "resize"})
        await asyncio.sleep(0.5)
        client.writer.transport.abort()  # no FIN, no GOAWAY: the peer just goes
        await client.close()

    run(vanish(exec_url(cl, cid, ["sleep", "1001"], stdin=True), tty=False))
    wait_for(lambda: "sleep 1001" not in processes(cl, cid), what="exec'd sleep killed")
    # With a terminal the shell is hung up on: its HUP trap runs.
    script = "trap 'echo hup > /tmp/hup; exit 0' HUP; while :; do sleep 0.1; done"
    run(vanish(exec_url(cl, cid, ["sh", "-c", script], stdin=True, tty=True), tty=True))
    wait_for(lambda: cl.exec(cid, "cat", "/tmp/hup").stdout == b"hup\n", what="SIGHUP seen")
    wait_for(lambda: processes(cl, cid) == ["sleep 1000"], what="only the main process left")


def _daemon_counts(d: Daemon) -> tuple[int, int]:
    assert d.proc is not None
    pid = d.proc.pid
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return kids


def _conmons(base: str) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if args and args[0].endswith(b"conmon") and any(base.encode() in a for a in args):
                count += 1
    return count


def _active_sessions(cl: Cluster) -> int:
    status = cl.rt.Status(api.StatusRequest(verbose=True), timeout=10)
    return int(json.loads(status.info["streaming"])["activeSessions"])


def test_200_sessions_dropped_every_way_leave_nothing(cl: Cluster, image_ref: str) -> None:
    pod_id = cl.run_pod()
    cid = start(cl, image_ref, SLEEP, pod=pod_id)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = f"mkdir -p /w; echo page > /w/index.html; exec httpd -f -p 127.0.0.1:{port} -h /w"
    web = cl.run(pod_id, container_config(image_ref, name="web", **sh(script)))
    att = cl.run(pod_id, container_config(image_ref, name="att", stdin=True, **sh("cat")))
    d = cl.daemon

    async def complete() -> None:
        assert (await spdy_exec(exec_url(cl, cid, ["echo", "x"]))).stdout == b"x\n"

    async def abort_mid_exec(tty: bool = False) -> None:
        url = exec_url(cl, cid, ["sleep", "999"], stdin=True, tty=tty)
        client, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        for kind in ["error", "stdin", "stdout", *(["resize"] if tty else [])]:
            await client.open({"streamtype": kind})
        await asyncio.sleep(0.05)
        client.writer.transport.abort()
        await client.close()

    async def close_before_streams() -> None:
        client, _ = await SpdyClient.connect(exec_url(cl, cid, ["true"]), ["v4.channel.k8s.io"])
        await client.open({"streamtype": "error"})
        await client.close()

    async def garbage() -> None:
        await garbage_after_upgrade(exec_url(cl, cid, ["true"]), b"\xff" * 64)

    async def ws_complete() -> None:
        channels, _ = await ws_exec(exec_url(cl, cid, ["echo", "w"]), "v5.channel.k8s.io")
        assert channels[1] == b"w\n"

    async def ws_abort() -> None:
        url = exec_url(cl, cid, ["sleep", "998"], stdin=True)
        client, _ = await WsClient.connect(url, ["v5.channel.k8s.io"])
        await client.receive()
        client.writer.transport.abort()
        await client.close()

    async def forward_abort() -> None:
        client, _ = await SpdyClient.connect(portforward_url(cl, pod_id), ["portforward.k8s.io"])
        await client.open({"streamtype": "error", "port": str(port), "requestid": "1"})
        data = await client.open({"streamtype": "data", "port": str(port), "requestid": "1"})
        await client.send(data, b"GET / HTTP/1.0\r\n")  # never finished: httpd waits
        await asyncio.sleep(0.05)
        await client.close()

    async def attach_abort() -> None:
        url = attach_url(cl, att, stdin=True)
        client, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        for kind in ("error", "stdin", "stdout"):
            await client.open({"streamtype": kind})
        await asyncio.sleep(0.05)
        client.writer.transport.abort()
        await client.close()

    async def bad_token() -> None:
        try:
            await spdy_exec(exec_url(cl, cid, ["true"]).rsplit("/", 1)[0] + "/nope")
        except UpgradeRefused as e:
            assert e.status == 404

    ways: list[Callable[[], Awaitable[None]]] = [
        complete, abort_mid_exec, lambda: abort_mid_exec(tty=True), close_before_streams,
        garbage, ws_complete, ws_abort, forward_abort, attach_abort, bad_token,
    ]  # fmt: skip

    async def rounds(n: int) -> None:
        sem = asyncio.Semaphore(10)

        async def one(i: int) -> None:
            async with sem:
                await ways[i % len(ways)]()

        await asyncio.gather(*(one(i) for i in range(n)))

    seen: list[object] = []

    def settled(base: tuple[int, int]) -> bool:
        assert d.proc is not None
        now = (_daemon_counts(d), _active_sessions(cl), processes(cl, cid), _children(d.proc.pid))
        seen[:] = [now]
        fds, threads = now[0]
        return fds <= base[0] and threads <= base[1] and now[1:] == (0, ["sleep 1000"], [])

    run(rounds(20))  # warm-up: executor threads, lazily opened files
    wait_for(lambda: _active_sessions(cl) == 0 and processes(cl, cid) == ["sleep 1000"])
    time.sleep(0.5)
    base = _daemon_counts(d)
    conmons = _conmons(d.base)
    assert conmons == 3
    run(rounds(200))
    try:
        wait_for(lambda: settled(base), timeout=30)
    except AssertionError:
        raise AssertionError(f"not back to {base} (fds, threads): last seen {seen}") from None
    assert _conmons(d.base) == conmons
    assert processes(cl, att) == ["cat"] and processes(cl, web)[0].startswith("httpd")


def test_a_peer_that_stops_reading_wedges_only_its_session(cl: Cluster, image_ref: str) -> None:
    cid = start(cl, image_ref, SLEEP)

    async def scenario() -> None:
        url = exec_url(cl, cid, ["sh", "-c", "exec head -c 500000000 /dev/zero"])
        stuck, _ = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        await stuck.open({"streamtype": "error"})
        await stuck.open({"streamtype": "stdout"})
        await stuck.open({"streamtype": "stderr"})
        stuck._task.cancel()  # stops reading: the daemon's writes back up
        await asyncio.sleep(1.0)
        # Other sessions are served meanwhile.
        for _ in range(3):
            result = await spdy_exec(exec_url(cl, cid, ["echo", "still"]))
            assert result.stdout == b"still\n"
        stuck.writer.transport.abort()
        await stuck.close()

    run(scenario())
    wait_for(lambda: processes(cl, cid) == ["sleep 1000"], what="the blocked head killed")
    wait_for(lambda: _active_sessions(cl) == 0, what="no session left")


def test_streaming_over_tls(
    make_daemon: Callable[..., Daemon], image_ref: str, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    d = make_daemon(f'[streaming]\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    cluster = Cluster(d)
    try:
        pull(d, image_ref)
        cid = start(cluster, image_ref, SLEEP)
        url = exec_url(cluster, cid, ["echo", "secure"])
        assert url.startswith("https://127.0.0.1:")
        assert run(spdy_exec(url)).stdout == b"secure\n"
    finally:
        cluster.cleanup()
        force_cleanup(d)

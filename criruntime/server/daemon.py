"""Daemon start-up, the serving loop, signal handling and a graceful stop.

Order matters: take the locks before touching the socket (so a second daemon can't steal it),
create the socket with mode 0660 from the start (umask), and remove it on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from grpc import aio

from criruntime import RUNTIME_NAME, __version__
from criruntime.api import MAX_MESSAGE
from criruntime.api.runtime.v1 import api_pb2_grpc as api_grpc
from criruntime.config import Config
from criruntime.observability import metrics
from criruntime.server.image_service import ImageServicer
from criruntime.server.interceptor import CriInterceptor
from criruntime.server.lock import LockHeld, PidLock
from criruntime.server.runtime_service import RuntimeServicer
from criruntime.server.services import Services

log = logging.getLogger("criruntime.daemon")

STOP_GRACE_SECONDS = 5.0


__all__ = ["LockHeld", "StartupError", "serve"]


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def _prepare_dirs(config: Config) -> None:
    os.makedirs(config.root, mode=0o711, exist_ok=True)
    os.makedirs(config.state, mode=0o711, exist_ok=True)
    os.makedirs(os.path.dirname(config.socket), mode=0o711, exist_ok=True)


async def serve(config: Config) -> None:
    _prepare_dirs(config)
    locks = [
        PidLock(os.path.join(config.root, "criruntime.lock"), f"root dir {config.root}"),
        PidLock(config.socket + ".lock", f"socket {config.socket}"),
    ]
    with contextlib.ExitStack() as stack:
        for lock in locks:
            lock.acquire()
            stack.callback(lock.release)
        await _serve_locked(config)


async def _serve_locked(config: Config) -> None:
    # We hold the socket lock, so a socket file here is a leftover of a crashed daemon.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(config.socket)
    services = Services.open(config)
    try:
        server = await _start_server(config, services)
    except BaseException:
        await services.close()  # e.g. the runtime namespace's mounts
        raise
    os.chmod(config.socket, 0o660)
    try:
        if config.metrics.address:
            port = metrics.serve(config.metrics.address)
            log.info(
                "metrics on http://%s:%d/metrics", config.metrics.address.rpartition(":")[0], port
            )
        log.info("%s %s listening on unix://%s", RUNTIME_NAME, __version__, config.socket)
        await _wait_for_signal()
        log.info("stopping: draining RPCs for up to %.0fs", STOP_GRACE_SECONDS)
        services.containers.events.close()  # event streams never end by themselves
        await server.stop(STOP_GRACE_SECONDS)
    finally:
        await services.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.socket)
    log.info("stopped")


async def _start_server(config: Config, services: Services) -> aio.Server:
    # Pods and containers left by a previous daemon are reconciled before the first RPC.
    await services.sandboxes.ensure_recovered()
    await services.containers.ensure_recovered()
    try:
        await services.streaming.start()
    except OSError as e:
        raise StartupError(
            f"streaming server cannot listen on {config.streaming.address}: {e.strerror or e}"
        ) from None
    server = aio.server(
        interceptors=[CriInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    api_grpc.add_RuntimeServiceServicer_to_server(RuntimeServicer(services), server)
    api_grpc.add_ImageServiceServicer_to_server(ImageServicer(services), server)
    address = f"unix://{config.socket}"
    old_umask = os.umask(0o117)  # socket born 0660: no window where others may connect
    try:
        if server.add_insecure_port(address) == 0:
            raise StartupError(f"cannot listen on {address}")
        await server.start()
    finally:
        os.umask(old_umask)
    return server


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

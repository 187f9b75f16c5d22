"""StopContainer semantics as containerd's: the grace period holds no lock, a later shorter
timeout moves the SIGKILL forward, and Remove / a pod stop (timeout 0) force it."""

from __future__ import annotations

import asyncio
import time

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import container_remove, container_status, container_stop
from criruntime.container.model import ContainerState
from tests.container.conftest import Env, run

IGNORES_TERM = ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]


def _stop_request(cid: str, timeout: int) -> api.StopContainerRequest:
    return api.StopContainerRequest(container_id=cid, timeout=timeout)


def test_a_later_shorter_stop_cuts_a_long_one_short(env: Env) -> None:
    cid = env.run_container(env.container_config(command=IGNORES_TERM))

    async def scenario() -> tuple[float, float]:
        started = time.monotonic()
        long = asyncio.ensure_future(
            container_stop.stop_container(env.service, _stop_request(cid, 3600))
        )
        await asyncio.sleep(0.5)  # the long stop sent SIGTERM and waits
        # Status answers meanwhile: the grace period holds no lock.
        st = await container_status.container_status(
            env.service, api.ContainerStatusRequest(container_id=cid)
        )
        assert st.status.state == api.ContainerState.CONTAINER_RUNNING
        await asyncio.wait_for(
            container_stop.stop_container(env.service, _stop_request(cid, 0)), 10
        )
        short_done = time.monotonic() - started
        await asyncio.wait_for(long, 10)  # the long one returns with the same outcome
        return short_done, time.monotonic() - started

    short_done, long_done = run(scenario())
    assert short_done < 5 and long_done < 5
    container = env.service.store.get(cid)
    assert container.state is ContainerState.EXITED and container.exit_code == 137
    assert not env.service.stops


def test_a_later_longer_stop_does_not_extend_the_first(env: Env) -> None:
    cid = env.run_container(env.container_config(command=IGNORES_TERM))

    async def scenario() -> float:
        started = time.monotonic()
        first = asyncio.ensure_future(container_stop.stop(env.service, cid, 1))
        await asyncio.sleep(0.2)
        await container_stop.stop(env.service, cid, 3600)
        await first
        return time.monotonic() - started

    elapsed = run(scenario())
    assert 0.9 <= elapsed < 5
    assert env.service.store.get(cid).exit_code == 137


def test_remove_forces_a_stop_in_its_grace_period(env: Env) -> None:
    cid = env.run_container(env.container_config(command=IGNORES_TERM))

    async def scenario() -> float:
        started = time.monotonic()
        long = asyncio.ensure_future(container_stop.stop(env.service, cid, 3600))
        await asyncio.sleep(0.5)
        await asyncio.wait_for(
            container_remove.remove_container(
                env.service, api.RemoveContainerRequest(container_id=cid)
            ),
            10,
        )
        await asyncio.wait_for(long, 10)
        return time.monotonic() - started

    assert run(scenario()) < 5
    assert env.service.store.find(cid) is None


def test_pod_stop_forces_a_stop_in_its_grace_period(env: Env) -> None:
    # StopPodSandbox stops the pod's containers with timeout 0 through this hook.
    cid = env.run_container(env.container_config(command=IGNORES_TERM))

    async def scenario() -> float:
        started = time.monotonic()
        long = asyncio.ensure_future(container_stop.stop(env.service, cid, 3600))
        await asyncio.sleep(0.5)
        await asyncio.wait_for(env.service.stop_pod_containers(env.pod.id, 0), 10)
        await asyncio.wait_for(long, 10)
        return time.monotonic() - started

    assert run(scenario()) < 5
    assert env.service.store.get(cid).exit_code == 137

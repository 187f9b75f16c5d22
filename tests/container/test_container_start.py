"""StartContainer preconditions: what runc would refuse in its own words is refused first."""

from __future__ import annotations

import dataclasses

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.container import container_start
from criruntime.container.model import ContainerState
from criruntime.errors import FailedPrecondition
from tests.container.conftest import Env, run


def test_start_in_a_stopped_pod_is_failed_precondition(env: Env) -> None:
    cid = env.create(env.container_config(command=["true"]))
    env.pod = dataclasses.replace(env.pod, ready=False)  # StopPodSandbox released its namespaces
    with pytest.raises(FailedPrecondition, match=r"pod sandbox \w+ is not ready"):
        run(
            container_start.start_container(
                env.service, api.StartContainerRequest(container_id=cid)
            )
        )
    container = env.service.get(cid)
    assert container.state is ContainerState.CREATED  # not a StartError: nothing was tried
    assert not env.service.runtime_for("").has_state(cid)

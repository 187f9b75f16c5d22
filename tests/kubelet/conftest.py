from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.container.daemon_env import ImageSet, pull
from tests.kubelet.kuberuntime import Kubelet
from tests.kubelet.node import Node


@pytest.fixture
def node(make_daemon: Callable[..., Daemon], imgs: ImageSet) -> Iterator[Node]:
    """A daemon with kubelet's view of the node around it, busybox pulled as kubelet would."""
    n = Node(make_daemon(), imgs.busybox_ref)
    try:
        n.daemon.restart()  # reads the conflist Node wrote; kubelet starts on a ready network
        pull(n.daemon, n.image)
        n.image_id = n.daemon.image.ImageStatus(
            api.ImageStatusRequest(image=api.ImageSpec(image=n.image)), timeout=10
        ).image.id
        yield n
    finally:
        n.cleanup()


@pytest.fixture
def kubelet(node: Node) -> Kubelet:
    return Kubelet(node)

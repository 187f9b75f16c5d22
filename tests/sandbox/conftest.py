from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Daemon
from tests.sandbox.podnet import PodNet


@pytest.fixture
def podnet(daemon: Daemon) -> Iterator[PodNet]:
    """A private bridge network with the reference plugins, cleaned up even on failure."""
    net = PodNet(daemon)
    net.link_plugins("bridge", "host-local", "portmap", "loopback")
    net.conflist()
    try:
        yield net
    finally:
        net.cleanup()

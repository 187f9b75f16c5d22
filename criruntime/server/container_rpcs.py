"""Container RPCs of runtime.v1.RuntimeService (mixed into RuntimeServicer)."""

from __future__ import annotations

from criruntime.server.services import Services


class ContainerRpcs:
    _s: Services

"""Prometheus metrics: per-RPC counts by status code and latency histograms, latency of the
runtime's own operations (pods, containers, pulls, CNI), pulled bytes, and the pods and
containers by state."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeAlias, TypeVar

from prometheus_client import REGISTRY, Counter, Histogram, Metric, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REQUESTS = Counter(
    "criruntime_grpc_requests",
    "CRI RPCs handled, by service, method and gRPC status code.",
    ["service", "method", "code"],
)
LATENCY = Histogram(
    "criruntime_grpc_request_duration_seconds",
    "CRI RPC latency, by service and method.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


def observe(service: str, method: str, code: str, seconds: float) -> None:
    REQUESTS.labels(service, method, code).inc()
    LATENCY.labels(service, method).observe(seconds)


def serve(address: str) -> int:
    """Starts the HTTP endpoint on HOST:PORT in a daemon thread; returns the bound port."""
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"))
    return int(server.server_port)


# ---- runtime operations -----------------------------------------------------------------------

OPERATION_LATENCY = Histogram(
    "criruntime_operation_duration_seconds",
    "Time the runtime spent on an operation that succeeded, by operation: sandbox_run, "
    "sandbox_stop, container_create, container_start, container_stop, image_pull, cni_add, "
    "cni_del.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
OPERATION_ERRORS = Counter(
    "criruntime_operation_errors",
    "Operations that failed, by operation.",
    ["operation"],
)
IMAGE_PULL_BYTES = Counter(
    "criruntime_image_pull_bytes",
    "Bytes of image blobs (layers, configs) downloaded from registries.",
)

P = ParamSpec("P")
R = TypeVar("R")
AsyncFn: TypeAlias = Callable[P, Coroutine[Any, Any, R]]


def timed(
    operation: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorates a coroutine function: its latency goes to criruntime_operation_duration_seconds
    when it returns, a failure to criruntime_operation_errors_total."""

    def wrap(fn: AsyncFn[P, R]) -> AsyncFn[P, R]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.monotonic()
            try:
                result = await fn(*args, **kwargs)
            except BaseException:
                OPERATION_ERRORS.labels(operation).inc()
                raise
            OPERATION_LATENCY.labels(operation).observe(time.monotonic() - started)
            return result

        return run

    return wrap


# ---- pods and containers by state, counted when scraped ---------------------------------------

StateCounts = Callable[[], dict[str, int]]


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.pods: StateCounts | None = None
        self.containers: StateCounts | None = None

    def collect(self) -> Iterator[Metric]:
        for name, what, counts in (
            ("criruntime_pods", "Pod sandboxes, by state.", self.pods),
            ("criruntime_containers", "Containers, by state.", self.containers),
        ):
            if counts is None:
                continue
            family = GaugeMetricFamily(name, what, labels=["state"])
            for state, n in sorted(counts().items()):
                family.add_metric([state], n)
            yield family


_STATES = _StateCollector()
REGISTRY.register(_STATES)


def count_states(pods: StateCounts, containers: StateCounts) -> None:
    """Where the pod and container counts come from (the stores), read at each scrape."""
    _STATES.pods, _STATES.containers = pods, containers

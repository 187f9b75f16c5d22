"""Prometheus metrics for the CRI API: per-RPC counts by status code and latency histograms."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

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

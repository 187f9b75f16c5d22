"""Node-level RPCs kubelet polls constantly: Version, Status, RuntimeConfig."""

from __future__ import annotations

import tempfile

from bench.harness import RuntimeUnderTest, Setup, Timing, containerd, criruntime, measure, report
from criruntime.api.runtime.v1 import api_pb2 as api

RUNS = 200


def _timings(rt: RuntimeUnderTest) -> dict[str, Timing]:
    return {
        "Version": measure(lambda _: rt.runtime.Version(api.VersionRequest()), RUNS, warmup=5),
        "Status": measure(lambda _: rt.runtime.Status(api.StatusRequest()), RUNS, warmup=5),
        "Status (verbose)": measure(
            lambda _: rt.runtime.Status(api.StatusRequest(verbose=True)), RUNS, warmup=5
        ),
    }


def run() -> str:
    with tempfile.TemporaryDirectory() as conf_dir, tempfile.TemporaryDirectory() as bin_dir:
        setup = Setup(cni_conf_dir=conf_dir, cni_bin_dirs=[bin_dir])
        with criruntime(setup) as ours:
            mine = _timings(ours)
        with containerd(setup) as theirs:
            other = _timings(theirs)
    rows = [(op, mine[op], other[op]) for op in mine]
    return report(f"node RPCs, {RUNS} calls each", rows)

"""The generated stubs match proto/, and the proto keeps the upstream CRI v1 shape."""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import REPO

GENERATED = Path(REPO) / "criruntime" / "api"


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    out = tmp_path / "criruntime" / "api"
    subprocess.run([os.path.join(REPO, "hack", "gen-proto.sh"), str(out)], check=True, cwd=REPO)
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        fresh, built = out / "runtime" / "v1" / name, GENERATED / "runtime" / "v1" / name
        assert filecmp.cmp(fresh, built, shallow=False), (
            f"{built} is stale: proto/ changed without regenerating; run `make proto`"
        )


def test_package_and_services() -> None:
    assert api.DESCRIPTOR.package == "runtime.v1"
    runtime = api.DESCRIPTOR.services_by_name["RuntimeService"]
    image = api.DESCRIPTOR.services_by_name["ImageService"]
    assert len(runtime.methods) == 35
    assert len(image.methods) == 6
    streaming = sorted(m.name for m in runtime.methods if m.server_streaming)
    assert streaming == [
        "GetContainerEvents", "StreamContainerStats", "StreamContainers",
        "StreamPodSandboxMetrics", "StreamPodSandboxStats", "StreamPodSandboxes",
    ]  # fmt: skip


def test_a_few_field_numbers_pinned() -> None:
    # Spot checks against k8s.io/cri-api v0.36.0; a renumbered field breaks every client.
    fields = api.PodSandboxConfig.DESCRIPTOR.fields_by_name
    assert fields["metadata"].number == 1
    assert fields["log_directory"].number == 3
    assert fields["linux"].number == 8
    assert api.ContainerConfig.DESCRIPTOR.fields_by_name["stop_signal"].number == 18
    assert api.StatusResponse.DESCRIPTOR.fields_by_name["runtime_handlers"].number == 3
    assert api.ImageFsInfoResponse.DESCRIPTOR.fields_by_name["container_filesystems"].number == 2

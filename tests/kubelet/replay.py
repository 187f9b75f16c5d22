"""Replays requests a real kubelet sent (tests/kubelet/data/*.jsonl) against the daemon.

Each line is `{"method": ..., "request": {...}}` in proto field names. Before a request is sent,
what belonged to the machine it was captured on is rewritten to the test node's: kubelet's dirs,
the pod cgroup root, the image reference. Ids are learned from responses: the id a RunPodSandbox,
CreateContainer or PullImage answers stands for the first id of that kind the recording uses
after it that it has not used before; ids the recording never created here (pods of an earlier
kubelet run) are left alone and expected to be NOT_FOUND.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.kubelet.node import Node

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_IMAGE_SERVICE = {"PullImage", "ImageStatus", "ListImages", "RemoveImage", "ImageFsInfo"}
# Where each kind of id appears in a request.
_ID_FIELDS = {"pod_sandbox_id": "pod", "container_id": "container"}


@dataclass
class Step:
    index: int
    method: str
    request: Message
    response: Message | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    foreign: bool = False  # names an object the recording made before this replay began


def load(name: str) -> list[dict[str, Any]]:
    with open(os.path.join(DATA, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Replayer:
    node: Node
    recorded_image: str  # the image as the recording names it
    ids: dict[str, str] = field(default_factory=dict)  # recorded id -> this run's id
    pending: dict[str, list[str]] = field(
        default_factory=lambda: {"pod": [], "container": [], "image": []}
    )
    foreign: set[str] = field(default_factory=set)  # recorded ids this run never made
    pods: dict[str, api.PodSandboxConfig] = field(default_factory=dict)  # this run's ids

    def rewrite(self, value: Any, key: str = "") -> Any:
        """Host paths, cgroup root, image names and ids of the recording → this run's."""
        if isinstance(value, dict):
            return {k: self.rewrite(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.rewrite(v, key) for v in value]
        if not isinstance(value, str):
            return value
        if value == self.recorded_image:
            return self.node.image
        if key in _ID_FIELDS or (key == "image" and value.startswith("sha256:")):
            return self._map_id(value, _ID_FIELDS.get(key, "image"))
        for old, new in (
            ("/var/lib/kubelet/", self.node.kubelet_root + "/"),
            ("/var/log/pods/", self.node.pod_log_root + "/"),
            ("/kubepods/", self.node.cgroup_root + "/"),
        ):
            if value.startswith(old):
                return new + value[len(old) :]
        return value

    def _map_id(self, value: str, kind: str) -> str:
        if value in self.ids:
            return self.ids[value]
        if self.pending[kind] and value not in self.foreign:
            self.ids[value] = self.pending[kind].pop(0)
            return self.ids[value]
        self.foreign.add(value)
        return value

    def steps(self, recording: list[dict[str, Any]]) -> Iterator[Step]:
        for index, entry in enumerate(recording):
            method = entry["method"]
            raw = self.rewrite(entry["request"])
            request = json_format.ParseDict(raw, getattr(api, f"{method}Request")())
            step = Step(index, method, request)
            step.foreign = any(raw.get(f) in self.foreign for f in _ID_FIELDS)
            self._before(method, request)
            stub = self.node.daemon.image if method in _IMAGE_SERVICE else self.node.daemon.runtime
            try:
                step.response = getattr(stub, method)(request, timeout=60)
            except grpc.RpcError as e:
                step.code, step.details = e.code(), e.details() or ""
            else:
                self._after(method, request, step.response)
            yield step

    def _before(self, method: str, request: Any) -> None:
        """What kubelet itself does on the node before it sends these requests."""
        if method == "RunPodSandbox":
            config = request.config
            self.node.prepare_pod(config.metadata.uid, config.linux.cgroup_parent)
        elif method == "CreateContainer":
            self.node.prepare_mounts(request.config)

    def _after(self, method: str, request: Any, response: Any) -> None:
        if method == "RunPodSandbox":
            self.pending["pod"].append(response.pod_sandbox_id)
            self.pods[response.pod_sandbox_id] = request.config
        elif method == "CreateContainer":
            self.pending["container"].append(response.container_id)
        elif method == "PullImage":
            # kubelet names the image by the ImageStatus id afterwards; it answers with that.
            status = self.node.daemon.image.ImageStatus(
                api.ImageStatusRequest(image=api.ImageSpec(image=response.image_ref)), timeout=10
            )
            if not self.pending["image"] and status.image.id not in self.ids.values():
                self.pending["image"].append(status.image.id)

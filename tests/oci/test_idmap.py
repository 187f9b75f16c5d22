"""Pod user-namespace mappings: what is accepted, what is refused and why, and the forms the
kernel and the OCI spec take."""

from __future__ import annotations

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.errors import InvalidArgument
from criruntime.oci import idmap

M = api.IDMapping
POD, NODE = api.NamespaceMode.POD, api.NamespaceMode.NODE


def options(uids: list[api.IDMapping], gids: list[api.IDMapping] | None = None,
            mode: api.NamespaceMode.ValueType = POD) -> api.NamespaceOption:  # fmt: skip
    return api.NamespaceOption(
        userns_options=api.UserNamespace(mode=mode, uids=uids, gids=uids if gids is None else gids)
    )


def test_kubelet_and_critest_mappings_are_accepted() -> None:
    kubelet = idmap.validate(options([M(container_id=0, host_id=65536 * 5, length=65536)]))
    assert (
        kubelet is not None and kubelet.host_uid(0) == 327680 and kubelet.host_gid(65535) == 393215
    )
    assert kubelet.uids[0].line() == "0 327680 65536\n"
    assert kubelet.to_oci()["gidMappings"] == [{"containerID": 0, "hostID": 327680, "size": 65536}]
    # critest maps 0 → 1000 for 100000 ids, as containerd and CRI-O accept
    assert idmap.validate(options([M(container_id=0, host_id=1000, length=100000)])) is not None
    split = [M(container_id=0, host_id=70000, length=1), M(container_id=1, host_id=90000, length=9)]
    assert idmap.validate(options(split)) is not None


def test_no_user_namespace_of_its_own() -> None:
    assert idmap.validate(api.NamespaceOption()) is None
    assert idmap.validate(options([], mode=NODE)) is None


@pytest.mark.parametrize(
    ("uids", "words"),
    [
        ([], "needs uid mappings"),
        ([M(container_id=0, host_id=1000, length=10), M(container_id=5, host_id=5000, length=10)],
         "overlap on the container side"),
        ([M(container_id=0, host_id=1000, length=10), M(container_id=10, host_id=1005, length=10)],
         "overlap on the host side"),
        ([M(container_id=1, host_id=1000, length=10)], "container id 0"),
        ([M(container_id=0, host_id=0, length=65536)], "host id 0"),
        ([M(container_id=0, host_id=1000, length=0)], "length must not be 0"),
        ([M(container_id=0, host_id=2**32 - 10, length=65536)], "past the largest id"),
        ([M(container_id=i, host_id=1000 + i, length=1) for i in range(341)], "at most 340"),
    ],
)  # fmt: skip
def test_invalid_mappings(uids: list[api.IDMapping], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        idmap.validate(options(uids))


def test_gid_mappings_are_checked_too() -> None:
    with pytest.raises(InvalidArgument, match="gid mappings must map container id 0"):
        idmap.validate(options([M(container_id=0, host_id=1000, length=10)],
                               [M(container_id=3, host_id=1000, length=10)]))  # fmt: skip


@pytest.mark.parametrize("mode", [api.NamespaceMode.CONTAINER, api.NamespaceMode.TARGET])
def test_only_pod_or_node_modes(mode: api.NamespaceMode.ValueType) -> None:
    with pytest.raises(InvalidArgument, match="only POD or NODE"):
        idmap.validate(options([M(container_id=0, host_id=1000, length=10)], mode=mode))


def test_host_namespaces_are_refused_with_a_user_namespace() -> None:
    opts = options([M(container_id=0, host_id=1000, length=10)])
    opts.network = NODE
    with pytest.raises(InvalidArgument, match="node's network namespace"):
        idmap.validate(opts)

"""The OCI runtime's private mount namespace: mount table reading, the real namespace, and the
start-up choice of the default runtime handler."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from criruntime.config import Config, RuntimeHandlerConfig
from criruntime.oci import mountns
from criruntime.oci.selection import RuntimeSet

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 254:0 /srv/my\\040dir /mnt/my\\040dir rw - ext4 /dev/vda rw
"""
PURE_V2 = "31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"


def _mounts(tmp_path: str, text: str) -> list[mountns.Mount]:
    path = os.path.join(tmp_path, "mountinfo")
    with open(path, "w") as f:
        f.write(text)
    return mountns.read_mounts(path)


def test_hybrid_layout_hides_the_unified_mount(tmp_path: str) -> None:
    mounts = _mounts(str(tmp_path), HYBRID)
    assert mountns.hidden_mounts(mounts) == ["/sys/fs/cgroup/unified"]
    assert mountns.v1_controllers(mounts) == {"cpu", "cpuacct", "memory"}
    assert mounts[1].shared and not mounts[2].shared
    assert mounts[-1].mount_point == "/mnt/my dir" and mounts[-1].root == "/srv/my dir"


def test_pure_v1_or_v2_hosts_need_no_namespace(tmp_path: str) -> None:
    assert mountns.hidden_mounts(_mounts(str(tmp_path), PURE_V2)) == []
    v1_only = "\n".join(line for line in HYBRID.splitlines() if "cgroup2" not in line)
    assert mountns.hidden_mounts(_mounts(str(tmp_path), v1_only + "\n")) == []


@pytest.fixture
def state() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="crir-ns-", dir="/tmp")
    yield base
    for m in sorted((m for m in mountns.read_mounts() if m.mount_point.startswith(base)),
                    key=lambda m: len(m.mount_point), reverse=True):  # fmt: skip
        subprocess.run(["umount", "-l", m.mount_point], check=False)
    subprocess.run(["rm", "-rf", base], check=False)


def _in_namespace(ns: mountns.PrivateMountNamespace, *argv: str) -> str:
    return subprocess.run([*ns.enter, *argv], capture_output=True, check=True, text=True).stdout


def test_namespace_hides_the_hybrid_mount_and_sees_later_mounts(state: str) -> None:
    hidden = mountns.hidden_mounts(mountns.read_mounts())
    assert hidden == ["/sys/fs/cgroup/unified"]  # these hosts' hybrid layout (design.md)
    ns = mountns.PrivateMountNamespace.prepare(hidden, state)
    try:
        inside = _in_namespace(ns, "cat", "/proc/self/mountinfo")
        assert " /sys/fs/cgroup/unified " not in inside
        assert " /sys/fs/cgroup/memory " in inside
        assert "memory" in ns.controllers and "hugetlb" not in ns.controllers
        # The host keeps its mount.
        assert any(m.mount_point == "/sys/fs/cgroup/unified" for m in mountns.read_mounts())
        # A mount made on the host under the state dir after the namespace reaches it.
        late = os.path.join(state, "late")
        os.mkdir(late)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", late], check=True)
        with open(os.path.join(late, "f"), "w") as f:
            f.write("seen")
        assert _in_namespace(ns, "cat", os.path.join(late, "f")) == "seen"
        subprocess.run(["umount", late], check=True)
        assert " " + late + " " not in _in_namespace(ns, "cat", "/proc/self/mountinfo")
    finally:
        ns.close()
    # Nothing stays mounted: the state dir's own bind is undone with the namespace.
    assert [m for m in mountns.read_mounts() if m.mount_point.startswith(state)] == []


def test_auto_default_is_crun_when_its_probe_runs(state: str) -> None:
    runtimes = RuntimeSet.open(Config(root=state + "/root", state=state + "/state"))
    try:
        info = runtimes.info()
        assert runtimes.default == info["defaultRuntime"] == "crun", runtimes.reason
        assert runtimes.reason.startswith("auto: crun ran a probe container")
        assert info["handlers"]["runc"]["mountNamespace"] == "host"
        crun = runtimes.handlers["crun"]
        if crun.namespace is not None:
            assert crun.cgroup_controllers == crun.namespace.controllers
            assert "without /sys/fs/cgroup/unified" in info["handlers"]["crun"]["mountNamespace"]
        assert runtimes.handlers["runc"].cgroup_controllers is None  # the host's, as they are
        # The probe leaves neither its bundle nor its cgroup.
        assert os.listdir(crun.root) == []
        assert not [p for p in os.listdir("/sys/fs/cgroup/memory") if "criruntime-probe" in p]
    finally:
        runtimes.close()


def test_auto_default_falls_back_to_runc_saying_why(state: str) -> None:
    config = Config(root=state + "/root", state=state + "/state")
    config.runtimes["crun"] = RuntimeHandlerConfig("/nonexistent/crun")
    runtimes = RuntimeSet.open(config)
    try:
        assert runtimes.default == "runc"
        assert "crun cannot run containers" in runtimes.reason
        assert "'/nonexistent/crun' is not installed" in runtimes.reason
    finally:
        runtimes.close()


def test_configured_default_is_kept_without_a_probe(state: str) -> None:
    config = Config(root=state + "/root", state=state + "/state", default_runtime="runc")
    runtimes = RuntimeSet.open(config)
    try:
        assert (runtimes.default, runtimes.reason) == (
            "runc",
            "set by default_runtime in the config",
        )
        assert runtimes.resolve(config).default_runtime == "runc"
    finally:
        runtimes.close()

"""Recovery of what a daemon killed mid-RunPodSandbox leaves behind but never recorded."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile

from criruntime.sandbox import namespaces, restart


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path + "/")]


def test_leftover_bundle_loses_its_pins_and_its_unrecorded_init() -> None:
    pod_id = secrets.token_hex(32)
    bundle = os.path.join(tempfile.mkdtemp(prefix="crir-rst-"), pod_id)
    ns = namespaces.PinnedNamespaces()
    try:
        ns = namespaces.create(
            os.path.join(bundle, "ns"), net=True, ipc=True, uts=True, pid=True, hostname="h",
            owner=pod_id,
        )  # fmt: skip
        assert ns.init_pid > 0 and namespaces.owned_inits(pod_id) == [ns.init_pid]
        assert namespaces.owned_inits(secrets.token_hex(32)) == []
        assert len(_mounts_under(bundle)) == 4
        # The daemon dies here: its row never learned the pins or the init's pid.
        restart._remove_orphan_dir(bundle)
        assert not os.path.exists(f"/proc/{ns.init_pid}")  # killed, and reaped (our child)
        assert _mounts_under(bundle) == [] and not os.path.exists(bundle)
    finally:
        namespaces.stop_init(ns.init_pid)
        for path in (ns.net, ns.ipc, ns.uts, ns.pid):
            namespaces.unpin(path)
        shutil.rmtree(os.path.dirname(bundle), ignore_errors=True)

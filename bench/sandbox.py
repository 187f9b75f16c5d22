"""runp, and stopp + rmp: criruntime vs containerd 1.6, both on Debian's reference CNI plugins
(bridge + host-local + portmap), plus criruntime on its own plugins run in-process.

containerd needs a pause image and there is no registry to pull one from, so one is built here
(a docker-archive holding the static catatonit as /pause) and imported with ctr.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from bench.harness import RuntimeUnderTest, Setup, Timing, containerd, criruntime, measure, report
from criruntime.api.runtime.v1 import api_pb2 as api

RUNS = 30
PAUSE_IMAGE = "localhost/bench/pause:1"
REFERENCE = "/usr/lib/cni"
_OWN_WRAPPER = "#!{python}\nfrom cni._skel import main_for\nmain_for({name!r})\n"


def _pause_archive(path: str) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add(shutil.which("catatonit") or "/usr/bin/catatonit", arcname="pause")
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause", "-P"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        [{"Config": "config.json", "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("layer.tar", layer_bytes), ("config.json", config),
                           ("manifest.json", manifest)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def import_pause_image(rt: RuntimeUnderTest, workdir: str) -> None:
    """containerd needs a pause image for its sandboxes: catatonit, imported with ctr."""
    archive = os.path.join(workdir, "pause.tar")
    _pause_archive(archive)
    subprocess.run(
        ["ctr", "-a", rt.socket, "-n", "k8s.io", "images", "import", archive],
        check=True,
        capture_output=True,
    )


def _conflist(conf_dir: str, name: str, subnet: str, ipam_dir: str, own: bool) -> None:
    prefix = "criruntime-" if own else ""
    conf = {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": prefix + "bridge",
                "bridge": name,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": prefix + "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "dataDir": ipam_dir,
                },
            },
            {"type": prefix + "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    for old in os.listdir(conf_dir):
        os.unlink(os.path.join(conf_dir, old))
    with open(os.path.join(conf_dir, "10-bench.conflist"), "w") as f:
        json.dump(conf, f)


def _pod(i: int) -> api.PodSandboxConfig:
    name = f"bench-{i}-{secrets.token_hex(3)}"
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="bench", uid=secrets.token_hex(8)),
        hostname=name,
        log_directory=f"/tmp/bench-logs/{name}",
        dns_config=api.DNSConfig(servers=["10.96.0.10"], searches=["bench.svc.cluster.local"]),
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(pid=api.NamespaceMode.CONTAINER)
            )
        ),
    )


def _timings(rt: RuntimeUnderTest) -> tuple[Timing, Timing]:
    ids: list[str] = []

    def runp(i: int) -> None:
        ids.append(
            rt.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=_pod(i))).pod_sandbox_id
        )

    def stop_rm(i: int) -> None:
        pod_id = ids.pop(0)
        rt.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        rt.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    run_t = measure(runp, RUNS, warmup=2)
    stop_t = measure(stop_rm, RUNS, warmup=2)
    return run_t, stop_t


@contextmanager
def _environment() -> Iterator[tuple[str, str, str]]:
    base = tempfile.mkdtemp(prefix="bench-sbx-", dir="/tmp")
    conf_dir, bin_dir, ipam = (os.path.join(base, d) for d in ("net.d", "bin", "ipam"))
    for d in (conf_dir, bin_dir, ipam):
        os.makedirs(d)
    for p in ("bridge", "host-local", "portmap", "loopback"):
        os.symlink(os.path.join(REFERENCE, p), os.path.join(bin_dir, p))
    for p in ("bridge", "host-local", "portmap", "loopback"):
        path = os.path.join(bin_dir, "criruntime-" + p)
        with open(path, "w") as f:
            f.write(_OWN_WRAPPER.format(python=sys.executable, name="criruntime-" + p))
        os.chmod(path, 0o755)
    try:
        yield base, conf_dir, bin_dir
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run() -> str:
    rows: list[tuple[str, Timing, Timing]] = []
    with _environment() as (base, conf_dir, bin_dir):
        bridge = "bnch" + secrets.token_hex(3)
        subnet = f"10.{random.randint(160, 250)}.{random.randint(0, 255)}.0/24"
        ipam = os.path.join(base, "ipam")
        setup = Setup(cni_conf_dir=conf_dir, cni_bin_dirs=[bin_dir], sandbox_image=PAUSE_IMAGE)
        try:
            _conflist(conf_dir, bridge, subnet, ipam, own=False)
            with containerd(setup) as theirs:
                import_pause_image(theirs, base)
                c_run, c_stop = _timings(theirs)
            with criruntime(setup) as ours:
                r_run, r_stop = _timings(ours)
            _conflist(conf_dir, bridge, subnet, ipam, own=True)
            with criruntime(setup) as ours:
                o_run, o_stop = _timings(ours)
        finally:
            subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
    rows = [
        ("runp (reference plugins)", r_run, c_run),
        ("stopp+rmp (reference)", r_stop, c_stop),
        ("runp (own, in-process)", o_run, c_run),
        ("stopp+rmp (own, in-process)", o_stop, c_stop),
    ]
    return report(
        f"pod sandboxes, {RUNS} pods each; containerd always on the reference plugins",
        rows,
        target=0.7,
    )


if __name__ == "__main__":
    print(run())

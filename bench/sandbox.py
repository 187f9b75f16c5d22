"""Pod sandboxes, networked: runp, stopp and rmp each timed on its own, then 20 concurrent runp
and 20 concurrent stopp, criruntime vs containerd 1.6, both daemons up at once and taking turns
in one rotation (as `bench container` does), so drift in the machine's speed lands on both.

criruntime runs on its default conflist (hack/install-cni.sh: its own bridge with ipMasq and
hairpin, host-local, portmap, all in-process); containerd on a conflist of the same shape with
the reference plugins (Debian's containernetworking-plugins). Each gets its own bridge, subnet
and IPAM dir, so neither sees the other's pods. Pods pile up during a phase (30 each by the end
of the runp phase), as on a node.

Every pod of the concurrent batch is checked: distinct IPs in the network's subnet, masquerade
rules in place while it runs, and after the batch's stop no port left on the bridge, no IPAM
reservation and no iptables rule of the network. The same is checked once everything is gone.

containerd needs a pause image and there is no registry to pull one from, so one is built here
(a docker-archive holding the static catatonit as /pause) and imported with ctr.

    .venv/bin/python -m bench sandbox
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from bench.harness import REPO, RuntimeUnderTest, Setup, Timing, containerd, criruntime
from criruntime.api.runtime.v1 import api_pb2 as api

RUNS = 30
WARMUP = 2
BATCH = 20  # pods started, then stopped, all at once
BATCH_ROUNDS = 3
QUIET = 0.1  # seconds before each turn: one daemon's background work stays out of the other's
PAUSE_IMAGE = "localhost/bench/pause:1"
REFERENCE = "/usr/lib/cni"
TARGETS = {"runp": 0.5, "stopp": 0.5, "rmp": 0.6, f"{BATCH}x runp": 1.0, f"{BATCH}x stopp": 1.0}


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


@dataclass
class Network:
    """One runtime's CNI network: its conf dir, bridge, subnet and IPAM dir."""

    name: str
    conf_dir: str
    bridge: str
    subnet: ipaddress.IPv4Network
    ipam_dir: str

    def reservations(self) -> list[str]:
        d = os.path.join(self.ipam_dir, self.name)
        if not os.path.isdir(d):
            return []
        return [f for f in os.listdir(d) if f[0].isdigit()]

    def ports(self) -> list[str]:
        brif = f"/sys/class/net/{self.bridge}/brif"
        return os.listdir(brif) if os.path.isdir(brif) else []

    def rules(self) -> list[str]:
        """nat rules of this network: ipMasq (per pod or per network) and portmap's."""
        out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if f'\\"{self.name}\\"' in line]


def _free_subnet(taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    used = [
        ipaddress.ip_interface(w[w.index("inet") + 1]).network
        for w in map(str.split, out.splitlines())
    ]
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(160, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in [*used, *taken]):
            return net
    raise RuntimeError("no free /24 in 10.160.0.0/11")


def _default_conflist(base: str, bin_dir: str) -> dict[str, object]:
    """The conflist `make run` installs, as hack/install-cni.sh writes it."""
    conf_dir = os.path.join(base, "default.d")
    subprocess.run(
        [os.path.join(REPO, "hack", "install-cni.sh"), bin_dir, conf_dir],
        check=True,
        capture_output=True,
    )
    with open(os.path.join(conf_dir, "10-criruntime.conflist")) as f:
        conf: dict[str, object] = json.load(f)
    shutil.rmtree(conf_dir)
    return conf


def _network(
    base: str, tag: str, conflist: dict[str, object], subnet: ipaddress.IPv4Network, reference: bool
) -> Network:
    """This run's copy of `conflist`: own name, bridge, subnet and IPAM dir, and for the
    reference the plugin types without criruntime's prefix."""
    net = Network(
        name=f"bench-{tag}-{secrets.token_hex(3)}",
        conf_dir=os.path.join(base, f"net-{tag}.d"),
        bridge=f"bn{tag[:2]}{secrets.token_hex(3)}",
        subnet=subnet,
        ipam_dir=os.path.join(base, f"ipam-{tag}"),
    )
    conf = json.loads(json.dumps(conflist))
    conf["name"] = net.name
    for plugin in conf["plugins"]:
        ipam = plugin.get("ipam")
        if reference:
            for entry in (plugin, ipam or {}):
                if "type" in entry:
                    entry["type"] = entry["type"].removeprefix("criruntime-")
        if "bridge" in plugin:
            plugin["bridge"] = net.bridge
        if ipam is not None:
            ipam["ranges"] = [[{"subnet": str(subnet)}]]
            ipam["dataDir"] = net.ipam_dir
    os.makedirs(net.conf_dir)
    with open(os.path.join(net.conf_dir, "10-bench.conflist"), "w") as f:
        json.dump(conf, f)
    return net


def _pod(i: int | str) -> api.PodSandboxConfig:
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


@dataclass
class Contestant:
    rt: RuntimeUnderTest
    net: Network
    pods: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def record(self, what: str, seconds: float) -> None:
        self.samples.setdefault(what, []).append(seconds)

    def runp(self, i: int | str) -> str:
        return str(
            self.rt.runtime.RunPodSandbox(
                api.RunPodSandboxRequest(config=_pod(i)), timeout=120
            ).pod_sandbox_id
        )

    def stopp(self, pod: str) -> None:
        self.rt.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)

    def rmp(self, pod: str) -> None:
        self.rt.runtime.RemovePodSandbox(
            api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120
        )

    def ip(self, pod: str) -> str:
        status = self.rt.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod))
        return str(status.status.network.ip)


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _rotate(
    contestants: list[Contestant], rounds: int, turn: Callable[[Contestant, int], None]
) -> None:
    """Each round every contestant takes one turn, the order shifting round by round."""
    for i in range(rounds):
        shift = i % len(contestants)
        for c in contestants[shift:] + contestants[:shift]:
            time.sleep(QUIET)
            turn(c, i)


def sequential(contestants: list[Contestant]) -> None:
    """runp, then stopp, then rmp: RUNS timed turns each (after WARMUP), pods piling up."""

    def runp(c: Contestant, i: int) -> None:
        started = time.perf_counter()
        c.pods.append(c.runp(i))
        if i >= WARMUP:
            c.record("runp", time.perf_counter() - started)

    def stopp(c: Contestant, i: int) -> None:
        pod = c.pods[i]
        seconds = _timed(lambda: c.stopp(pod))
        if i >= WARMUP:
            c.record("stopp", seconds)

    def rmp(c: Contestant, i: int) -> None:
        pod = c.pods[i]
        seconds = _timed(lambda: c.rmp(pod))
        if i >= WARMUP:
            c.record("rmp", seconds)

    for phase in (runp, stopp, rmp):
        _rotate(contestants, WARMUP + RUNS, phase)
    for c in contestants:
        c.pods.clear()
        _check_clean(c)


def concurrent(contestants: list[Contestant]) -> None:
    """BATCH pods started at once, checked, then all stopped at once, checked, removed."""

    def turn(c: Contestant, i: int) -> None:
        with ThreadPoolExecutor(BATCH) as pool:
            started = time.perf_counter()
            pods = list(pool.map(lambda k: c.runp(f"b{i}-{k}"), range(BATCH)))
            c.record(f"{BATCH}x runp", time.perf_counter() - started)
            ips = [c.ip(p) for p in pods]
            assert len(set(ips)) == BATCH, f"{c.rt.name}: IPs collide: {sorted(ips)}"
            assert all(ipaddress.ip_address(ip) in c.net.subnet for ip in ips), ips
            assert len(c.net.reservations()) == BATCH, c.net.reservations()
            assert len(c.net.ports()) == BATCH, c.net.ports()
            assert c.net.rules(), f"{c.rt.name}: no masquerade rule with {BATCH} pods up"
            started = time.perf_counter()
            list(pool.map(c.stopp, pods))
            c.record(f"{BATCH}x stopp", time.perf_counter() - started)
            _check_clean(c)
            list(pool.map(c.rmp, pods))

    _rotate(contestants, BATCH_ROUNDS, turn)


def _check_clean(c: Contestant) -> None:
    """Nothing of the network is left once its pods are stopped: no veth on the bridge, no IP
    reserved, no iptables rule."""
    # A stopped pod's veth goes with its netns, which the kernel may reap a moment later.
    deadline = time.monotonic() + 5
    while c.net.ports() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {"veths": c.net.ports(), "IPs": c.net.reservations(), "rules": c.net.rules()}
    assert not any(left.values()), f"{c.rt.name} left {left}"


@contextmanager
def _environment() -> Iterator[tuple[str, str]]:
    base = tempfile.mkdtemp(prefix="bench-sbx-", dir="/tmp")
    bin_dir = os.path.join(base, "bin")
    os.makedirs(bin_dir)
    for p in ("bridge", "host-local", "portmap", "loopback"):
        os.symlink(os.path.join(REFERENCE, p), os.path.join(bin_dir, p))
    try:
        yield base, bin_dir
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _table(contestants: dict[str, Contestant]) -> str:
    ours, theirs = contestants["criruntime"], contestants["containerd"]
    lines = [
        f"## pod sandboxes, networked with ipMasq: {RUNS} each in one rotation (after {WARMUP} "
        f"warm-up), then {BATCH_ROUNDS} rounds of {BATCH} at once (wall time)",
        f"{'operation':<14} {'criruntime ms':>14} {'containerd ms':>14} {'ratio':>7} "
        f"{'target':>7}  met",
    ]
    for what, target in TARGETS.items():
        mine, other = Timing(ours.samples[what]), Timing(theirs.samples[what])
        ratio = mine.median / other.median
        lines.append(
            f"{what:<14} {mine.median * 1000:>14.1f} {other.median * 1000:>14.1f} "
            f"{ratio:>6.2f}x {target:>6.2f}x  {'yes' if ratio <= target else 'NO'}"
        )
    lines.append(
        "(medians; criruntime: its default conflist, own plugins in-process; containerd: the "
        "reference plugins; no veth, IP or iptables rule left after each phase)"
    )
    return "\n".join(lines)


def run() -> str:
    with _environment() as (base, bin_dir), ExitStack() as stack:
        default = _default_conflist(base, bin_dir)
        ours_subnet = _free_subnet([])
        nets = {
            "criruntime": _network(base, "crir", default, ours_subnet, reference=False),
            "containerd": _network(
                base, "ctrd", default, _free_subnet([ours_subnet]), reference=True
            ),
        }
        for net in nets.values():
            stack.callback(subprocess.run, ["ip", "link", "del", net.bridge], capture_output=True)
        theirs = stack.enter_context(
            containerd(Setup(nets["containerd"].conf_dir, [bin_dir], sandbox_image=PAUSE_IMAGE))
        )
        import_pause_image(theirs, base)
        ours = stack.enter_context(criruntime(Setup(nets["criruntime"].conf_dir, [bin_dir])))
        contestants = {rt.name: Contestant(rt, nets[rt.name]) for rt in (ours, theirs)}
        sequential(list(contestants.values()))
        concurrent(list(contestants.values()))
        return _table(contestants)


if __name__ == "__main__":
    print(run())

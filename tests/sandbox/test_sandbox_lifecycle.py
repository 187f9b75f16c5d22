"""Pod lifecycle against the real daemon: namespaces, files, cgroups, CNI, idempotency."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.sandbox.podnet import (
    PodNet,
    info,
    link_exists,
    mounts_under,
    pod_config,
    remove_pod,
    run_pod,
    status,
    stop_pod,
)

NODE = api.NamespaceMode.NODE
POD = api.NamespaceMode.POD


def nsenter(*args: str) -> str:
    return subprocess.run(["nsenter", *args], capture_output=True, text=True, check=True).stdout


def test_run_inspect_stop_remove(daemon: Daemon, podnet: PodNet) -> None:
    config = pod_config(
        hostname="web-1",
        dns_config=api.DNSConfig(
            servers=["10.96.0.10"], searches=["test.svc.cluster.local"], options=["ndots:5"]
        ),
        labels={"app": "web"},
        annotations={"note": "x"},
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent=f"/crtest-{podnet.name}/pod1",
            resources=api.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=64 << 20),
            overhead=api.LinuxContainerResources(memory_limit_in_bytes=1 << 20),
        ),
    )
    pod_id = run_pod(daemon, config)
    st = status(daemon, pod_id).status
    assert st.state == api.PodSandboxState.SANDBOX_READY
    assert st.metadata == config.metadata
    assert st.labels == {"app": "web"} and st.annotations == {"note": "x"}
    # A pod naming no handler gets the default, which a start-up probe chose (crun here).
    runtimes = json.loads(daemon.runtime.Status(api.StatusRequest(verbose=True)).info["runtimes"])
    assert st.runtime_handler == runtimes["defaultRuntime"] == "crun"
    assert ipaddress.ip_address(st.network.ip) in podnet.subnet

    details = info(daemon, pod_id)
    netns, uts = details["netNamespacePath"], details["utsNamespacePath"]
    assert os.path.ismount(netns) and os.path.ismount(details["ipcNamespacePath"])
    assert details["pidNamespacePath"] == ""
    assert nsenter(f"--uts={uts}", "hostname").strip() == "web-1"
    assert st.network.ip in nsenter(f"--net={netns}", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "state UP" in nsenter(f"--net={netns}", "ip", "link", "show", "lo") or "UNKNOWN" in (
        nsenter(f"--net={netns}", "ip", "link", "show", "lo")
    )

    with open(details["resolvConfPath"]) as f:
        assert f.read() == (
            "nameserver 10.96.0.10\nsearch test.svc.cluster.local\noptions ndots:5\n"
        )
    with open(details["hostsPath"]) as f:
        hosts = f.read()
    assert f"{st.network.ip}\tweb-1\n" in hosts and "127.0.0.1\tlocalhost" in hosts
    with open(details["hostnamePath"]) as f:
        assert f.read() == "web-1\n"
    assert details["shmPath"] in mounts_under(details["shmPath"])

    cg = config.linux.cgroup_parent
    assert details["cgroupParent"] == cg
    with open(f"/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes") as f:
        assert int(f.read()) == (64 << 20) + (1 << 20)
    with open(f"/sys/fs/cgroup/cpu{cg}/cpu.shares") as f:
        assert int(f.read()) == 512

    veths = [n for n in os.listdir(f"/sys/class/net/{podnet.bridge}/brif")]
    assert len(veths) == 1

    stop_pod(daemon, pod_id)
    stop_pod(daemon, pod_id)  # idempotent
    st = status(daemon, pod_id).status
    assert st.state == api.PodSandboxState.SANDBOX_NOTREADY
    assert not os.path.exists(netns)
    assert os.listdir(f"/sys/class/net/{podnet.bridge}/brif") == []
    assert not mounts_under(daemon.state)

    remove_pod(daemon, pod_id)
    remove_pod(daemon, pod_id)  # idempotent
    stop_pod(daemon, pod_id)  # stop of a removed pod is fine too
    with pytest.raises(grpc.RpcError) as e:
        status(daemon, pod_id)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert not os.path.exists(f"/sys/fs/cgroup/memory/crtest-{podnet.name}")
    assert os.listdir(os.path.join(daemon.state, "sandboxes")) == []


def test_pod_without_hostname_gets_the_nodes(daemon: Daemon, podnet: PodNet) -> None:
    # critest sends no hostname and pod names longer than the 63 chars a hostname may have.
    config = pod_config(name="create-PodSandbox-for-container-" + "x" * 40, hostname="")
    pod_id = run_pod(daemon, config)
    uts = info(daemon, pod_id)["utsNamespacePath"]
    assert nsenter(f"--uts={uts}", "hostname").strip() == socket.gethostname()
    remove_pod(daemon, pod_id)


def test_remove_running_pod_stops_it_first(daemon: Daemon, podnet: PodNet) -> None:
    pod_id = run_pod(daemon, pod_config())
    netns = info(daemon, pod_id)["netNamespacePath"]
    remove_pod(daemon, pod_id)
    assert not os.path.exists(netns)
    assert os.listdir(f"/sys/class/net/{podnet.bridge}/brif") == []
    assert not mounts_under(daemon.base)


def test_same_request_retried_gets_same_pod_but_clash_names_holder(
    daemon: Daemon, podnet: PodNet
) -> None:
    config = pod_config()
    first = run_pod(daemon, config)
    assert run_pod(daemon, config) == first
    other = api.PodSandboxConfig()
    other.CopyFrom(config)
    other.hostname = "different"
    with pytest.raises(grpc.RpcError) as e:
        run_pod(daemon, other)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first in (e.value.details() or "")
    # A stopped holder still owns the name: kubelet must use a new attempt.
    stop_pod(daemon, first)
    with pytest.raises(grpc.RpcError) as e:
        run_pod(daemon, config)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    config.metadata.attempt = 1
    assert run_pod(daemon, config) != first


def test_concurrent_identical_requests_make_one_pod(daemon: Daemon, podnet: PodNet) -> None:
    config = pod_config()
    request = api.RunPodSandboxRequest(config=config)
    futures = [daemon.runtime.RunPodSandbox.future(request, timeout=30) for _ in range(4)]
    ids = {f.result().pod_sandbox_id for f in futures}
    assert len(ids) == 1
    assert len(daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items) == 1


def test_racing_stops_and_removes_all_succeed(daemon: Daemon) -> None:
    # A stop that waited for the pod's lock while a remove ran used to find the row gone and
    # answer NOT_FOUND; Stop and Remove are idempotent, in any interleaving.
    rt = daemon.runtime
    for _ in range(6):
        config = pod_config()
        ns = config.linux.security_context.namespace_options
        ns.network = ns.ipc = NODE
        pod_id = run_pod(daemon, config)
        stop = api.StopPodSandboxRequest(pod_sandbox_id=pod_id)
        remove = api.RemovePodSandboxRequest(pod_sandbox_id=pod_id)
        futures = [
            rt.RemovePodSandbox.future(remove, timeout=30),
            rt.StopPodSandbox.future(stop, timeout=30),
            rt.StopPodSandbox.future(stop, timeout=30),
            rt.RemovePodSandbox.future(remove, timeout=30),
        ]
        for future in futures:
            future.result()  # raises on any error code
    assert rt.ListPodSandbox(api.ListPodSandboxRequest()).items == []


def test_host_network_pod_skips_cni_and_uses_host_files(daemon: Daemon) -> None:
    # No conflist at all: a host-network pod must not need one.
    config = pod_config(hostname="")
    ns = config.linux.security_context.namespace_options
    ns.network, ns.ipc = NODE, NODE
    pod_id = run_pod(daemon, config)
    st = status(daemon, pod_id).status
    assert st.state == api.PodSandboxState.SANDBOX_READY and st.network.ip == ""
    details = info(daemon, pod_id)
    assert details["netNamespacePath"] == "" and details["utsNamespacePath"] == ""
    assert details["ipcNamespacePath"] == "" and details["shmPath"] == ""
    with open(details["hostsPath"]) as f, open("/etc/hosts") as host:
        assert f.read() == host.read()
    with open(details["resolvConfPath"]) as f, open("/etc/resolv.conf") as host:
        assert f.read() == host.read()
    remove_pod(daemon, pod_id)


def test_pod_network_without_config_fails_cleanly(daemon: Daemon) -> None:
    with pytest.raises(grpc.RpcError) as e:
        run_pod(daemon, pod_config())
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cni config uninitialized" in (e.value.details() or "")
    assert not mounts_under(daemon.base)
    assert daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []


def test_sysctls_namespaced_applied_others_refused(daemon: Daemon, podnet: PodNet) -> None:
    config = pod_config(
        linux=api.LinuxPodSandboxConfig(
            sysctls={"net.ipv4.ip_unprivileged_port_start": "123", "kernel/shmmax": "65536"}
        )
    )
    pod_id = run_pod(daemon, config)
    details = info(daemon, pod_id)
    net, ipc = details["netNamespacePath"], details["ipcNamespacePath"]
    assert (
        nsenter(f"--net={net}", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start") == "123\n"
    )
    assert nsenter(f"--ipc={ipc}", "cat", "/proc/sys/kernel/shmmax") == "65536\n"
    with open("/proc/sys/kernel/shmmax") as f:
        assert f.read() != "65536\n"

    for bad in ({"vm.swappiness": "10"}, {"kernel.pid_max": "4096"}):
        with pytest.raises(grpc.RpcError) as e:
            run_pod(daemon, pod_config(linux=api.LinuxPodSandboxConfig(sysctls=bad)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not namespaced" in (e.value.details() or "")
    host_net = pod_config(linux=api.LinuxPodSandboxConfig(sysctls={"net.core.somaxconn": "1024"}))
    host_net.linux.security_context.namespace_options.network = NODE
    with pytest.raises(grpc.RpcError) as e:
        run_pod(daemon, host_net)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pod_pid_namespace_held_by_init(daemon: Daemon, podnet: PodNet) -> None:
    config = pod_config()
    config.linux.security_context.namespace_options.pid = POD
    config.linux.resources.oom_score_adj = -998  # denied here: degraded, not fatal
    pod_id = run_pod(daemon, config)
    details = info(daemon, pod_id)
    pid = details["pid"]
    assert pid > 0 and os.path.ismount(details["pidNamespacePath"])
    with open(f"/proc/{pid}/status") as f:
        nspid = next(line for line in f if line.startswith("NSpid:")).split()
    assert nspid[-1] == "1"  # PID 1 of the pod
    assert os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat(details["pidNamespacePath"]).st_ino
    with open(f"/sys/fs/cgroup/memory{details['cgroupParent']}/cgroup.procs") as f:
        assert str(pid) in f.read().split()
    stop_pod(daemon, pod_id)
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped
    remove_pod(daemon, pod_id)


def test_list_filters(daemon: Daemon, podnet: PodNet) -> None:
    a = run_pod(daemon, pod_config(labels={"app": "a", "tier": "web"}))
    b = run_pod(daemon, pod_config(labels={"app": "b", "tier": "web"}))
    stop_pod(daemon, b)

    def listed(f: api.PodSandboxFilter | None = None) -> set[str]:
        return {
            p.id for p in daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest(filter=f)).items
        }

    assert listed() == {a, b}
    assert listed(api.PodSandboxFilter(id=a[:8])) == {a}
    ready = api.PodSandboxStateValue(state=api.PodSandboxState.SANDBOX_READY)
    notready = api.PodSandboxStateValue(state=api.PodSandboxState.SANDBOX_NOTREADY)
    assert listed(api.PodSandboxFilter(state=ready)) == {a}
    assert listed(api.PodSandboxFilter(state=notready)) == {b}
    assert listed(api.PodSandboxFilter(label_selector={"tier": "web"})) == {a, b}
    assert listed(api.PodSandboxFilter(label_selector={"app": "b", "tier": "web"})) == {b}
    assert listed(api.PodSandboxFilter(label_selector={"app": "c"})) == set()
    # Status by unique prefix, as crictl does.
    assert status(daemon, a[:12], verbose=False).status.id == a


def test_invalid_requests(daemon: Daemon) -> None:
    LPSC, R = api.LinuxPodSandboxConfig, api.LinuxContainerResources
    for config, handler, names in (
        (api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="x", namespace="y")), "",
         "metadata.uid"),
        (pod_config(), "no-such-handler", "no-such-handler"),
        (pod_config(linux=LPSC(cgroup_parent="/a/../../etc")), "", "cgroup_parent"),
        (pod_config(log_directory="relative/logs"), "", "log_directory"),
        # Each would add a line to the pod's /etc/hosts or resolv.conf.
        (pod_config(hostname="h\n10.0.0.9 evil"), "", "hostname"),
        (pod_config(dns_config=api.DNSConfig(servers=["10.0.0.10\nnameserver 10.0.0.9"])), "",
         "dns_config.servers[0]"),
        (pod_config(dns_config=api.DNSConfig(searches=["a.local\nnameserver 10.0.0.9"])), "",
         "dns_config.searches[0]"),
        (pod_config(dns_config=api.DNSConfig(options=["ndots:5 x"])), "", "dns_config.options[0]"),
        (pod_config(linux=LPSC(resources=R(cpu_shares=-1))), "", "linux.resources.cpu_shares"),
        (pod_config(linux=LPSC(overhead=R(unified={"../x": "1"}))), "", "linux.overhead.unified"),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as e:
            run_pod(daemon, config, handler)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert names in (e.value.details() or ""), e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stop_pod(daemon, "")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_default_cgroup_is_removed_with_pod(daemon: Daemon, podnet: PodNet) -> None:
    pod_id = run_pod(daemon, pod_config())
    cg = info(daemon, pod_id)["cgroupParent"]
    assert cg == f"/criruntime/{pod_id}"
    assert os.path.isdir(f"/sys/fs/cgroup/memory{cg}") and os.path.isdir(f"/sys/fs/cgroup/pids{cg}")
    remove_pod(daemon, pod_id)
    assert not os.path.exists(f"/sys/fs/cgroup/memory{cg}")
    assert not link_exists("veth-none")


@pytest.mark.parametrize("last", ["a", "b"])
def test_a_cgroup_parent_the_daemon_made_goes_with_its_last_pod(daemon: Daemon, last: str) -> None:
    # /P is made for /P/pod-a; /P/pod-b then finds it. Whichever pod goes last takes /P along.
    parent = f"/crtest-parent-{os.getpid()}-{last}"
    pods = {}
    for name in ("a", "b"):
        config = pod_config(linux=api.LinuxPodSandboxConfig(cgroup_parent=f"{parent}/pod-{name}"))
        ns = config.linux.security_context.namespace_options
        ns.network, ns.ipc = NODE, NODE
        pods[name] = run_pod(daemon, config)
    hierarchies = [f"/sys/fs/cgroup/{h}" for h in ("memory", "pids", "cpu,cpuacct")]
    try:
        assert all(os.path.isdir(h + parent) for h in hierarchies if os.path.isdir(h))
        first = "b" if last == "a" else "a"
        remove_pod(daemon, pods.pop(first))
        assert os.path.isdir("/sys/fs/cgroup/memory" + parent)  # the other pod is in it
        remove_pod(daemon, pods.pop(last))
        left = [h + parent for h in hierarchies if os.path.exists(h + parent)]
        assert not left, left
    finally:
        for pod_id in pods.values():
            remove_pod(daemon, pod_id)
        for h in os.listdir("/sys/fs/cgroup"):
            for path in (f"/sys/fs/cgroup/{h}{parent}/pod-a", f"/sys/fs/cgroup/{h}{parent}/pod-b"):
                if os.path.isdir(path):
                    os.rmdir(path)
            if os.path.isdir(f"/sys/fs/cgroup/{h}{parent}"):
                os.rmdir(f"/sys/fs/cgroup/{h}{parent}")

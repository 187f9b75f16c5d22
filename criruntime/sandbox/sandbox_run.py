"""RunPodSandbox: namespaces pinned to files, pod cgroup, /dev/shm, CNI, DNS files.

Each step registers its undo on an AsyncExitStack as it goes; the stack is dropped only when the
pod is READY, so a failure half-way leaves nothing behind. The pods row is written first (marked
`creating`), reserving the name durably and telling restart recovery what to clean if the daemon
dies mid-way.

A retry of the same request (same config and handler) after a client timeout gets the sandbox
the first call made: creation runs as its own task, not tied to the RPC that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.cgroupfs import Resources, systemd_slice_to_path
from criruntime.cgroups.host import HostCgroups
from criruntime.errors import AlreadyExists, InvalidArgument, Unknown
from criruntime.network.cni_executor import PluginError, result_ips
from criruntime.network.pod_network import EGRESS_ANNOTATION, INGRESS_ANNOTATION, parse_quantity
from criruntime.observability import metrics
from criruntime.oci import idmap
from criruntime.sandbox import dns, namespaces
from criruntime.sandbox.model import PodSandbox, SandboxState, name_key
from criruntime.sandbox.service import DEFAULT_CGROUP_PREFIX, InFlightRun, SandboxService

log = logging.getLogger("criruntime.sandbox")

NamespaceMode = api.NamespaceMode


class NetworkSetupError(Unknown):
    """A CNI plugin failed; the message carries the plugin's own (gRPC UNKNOWN, as containerd)."""


@metrics.timed("sandbox_run")
async def run_pod_sandbox(svc: SandboxService, request: api.RunPodSandboxRequest) -> str:
    await svc.ensure_recovered()
    config = request.config
    handler = _validate(svc, request)
    key = name_key(config.metadata)
    request_key = handler.encode() + b"\0" + config.SerializeToString(deterministic=True)

    running = svc.in_flight.get(key)
    if running is not None:
        if running.request_key != request_key:
            raise AlreadyExists(
                f"pod sandbox name {key!r} is reserved for {running.sandbox_id} "
                "(being created with a different config)"
            )
        log.info(
            "RunPodSandbox %s retried while in progress: waiting for %s", key, running.sandbox_id
        )
        return await asyncio.shield(running.task)

    existing = svc.store.get_by_name_key(key)
    if existing is not None:
        same = (
            existing.runtime_handler == handler
            and existing.config.SerializeToString(deterministic=True)
            == request_key.split(b"\0", 1)[1]
        )
        if same and existing.ready:
            log.info("RunPodSandbox %s retried: returning %s", key, existing.id)
            return existing.id
        raise AlreadyExists(f"pod sandbox name {key!r} is already used by {existing.id}")

    sandbox_id = secrets.token_hex(32)
    task = asyncio.create_task(_create(svc, sandbox_id, config, handler))
    svc.in_flight[key] = InFlightRun(sandbox_id, request_key, task)
    task.add_done_callback(lambda t: _finished(svc, key, t))
    return await asyncio.shield(task)


def _finished(svc: SandboxService, key: str, task: asyncio.Task[str]) -> None:
    svc.in_flight.pop(key, None)
    if not task.cancelled() and task.exception() is not None:
        # Logged here too: the caller that started it may have gone (client timeout).
        log.info("RunPodSandbox %s failed: %s", key, task.exception())


def _validate(svc: SandboxService, request: api.RunPodSandboxRequest) -> str:
    config = request.config
    md = config.metadata
    if not request.HasField("config") or not config.HasField("metadata"):
        raise InvalidArgument("RunPodSandbox needs config.metadata")
    for what, value in (("name", md.name), ("namespace", md.namespace), ("uid", md.uid)):
        if not value:
            raise InvalidArgument(f"pod sandbox metadata.{what} must not be empty")
    handler = request.runtime_handler or svc.config.default_runtime
    if handler not in svc.config.runtimes:
        raise InvalidArgument(
            f"runtime handler {request.runtime_handler!r} is not configured "
            f"(configured: {', '.join(sorted(svc.config.runtimes))})"
        )
    ns = config.linux.security_context.namespace_options
    if NamespaceMode.TARGET in (ns.network, ns.ipc, ns.pid):
        raise InvalidArgument("namespace mode TARGET is only valid for containers")
    if idmap.validate(ns) is not None and not svc.user_namespaces_supported(handler):
        raise InvalidArgument(
            f"runtime handler {handler!r} cannot run pods with user namespaces on this host"
        )
    namespaces.validate_sysctls(
        dict(config.linux.sysctls),
        net=ns.network != NamespaceMode.NODE,
        ipc=ns.ipc != NamespaceMode.NODE,
        uts=ns.network != NamespaceMode.NODE,
    )
    if config.log_directory and not config.log_directory.startswith("/"):
        raise InvalidArgument(
            f"log_directory must be an absolute path, got {config.log_directory!r}"
        )
    pod_resources(config.linux, svc.host_cgroups, [])  # refuses what the host cannot enforce
    parent = config.linux.cgroup_parent
    if parent and ".." in parent.split("/"):
        raise InvalidArgument(f"cgroup_parent {parent!r} is not a valid cgroup path")
    for pm in config.port_mappings:
        if not 0 <= pm.host_port <= 65535 or not 0 < pm.container_port <= 65535:
            raise InvalidArgument(
                f"port mapping {pm.host_port}:{pm.container_port} is out of range"
            )
    dns.pod_hostname(config)
    dns.validate_dns(config.dns_config)
    for annotation in (INGRESS_ANNOTATION, EGRESS_ANNOTATION):
        if config.annotations.get(annotation):  # parsed here: after ADD is too late to refuse
            parse_quantity(config.annotations[annotation])
    return handler


def pod_cgroup_path(svc: SandboxService, sandbox_id: str, config: api.PodSandboxConfig) -> str:
    parent = config.linux.cgroup_parent
    if not parent:
        return f"{DEFAULT_CGROUP_PREFIX}/{sandbox_id}"
    if svc.config.cgroup_driver == "systemd":
        return systemd_slice_to_path(parent)
    return "/" + parent.strip("/")


def _shared_ownership(svc: SandboxService, cgroup: str, owned: str) -> str:
    """A parent cgroup an earlier pod made (/P, for /P/pod-a) is this pod's too (/P/pod-b), so
    whichever of them goes last removes it; else the first one's removal finds it busy and it
    stays forever. Only when this pod makes part of its path: one that kubelet made is left
    alone, and a pod cgroup another pod uses as its own is never claimed."""
    if not owned:
        return owned
    for other in svc.store.list():
        top = other.cgroup_owned_from
        if top and len(top) < len(owned) and cgroup.startswith(top.rstrip("/") + "/"):
            owned = top
    return owned


def to_resources(r: api.LinuxContainerResources) -> Resources:
    return Resources(
        cpu_shares=r.cpu_shares,
        cpu_quota=r.cpu_quota,
        cpu_period=r.cpu_period,
        memory_limit=r.memory_limit_in_bytes,
        memory_swap_limit=r.memory_swap_limit_in_bytes,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        hugepage_limits={h.page_size: h.limit for h in r.hugepage_limits},
        unified=dict(r.unified),
    )


def pod_resources(
    linux: api.LinuxPodSandboxConfig, host: HostCgroups, warnings: list[str]
) -> Resources | None:
    """resources (the containers' sum) plus overhead, fitted to the host as containers' limits
    are; overhead alone bounds nothing."""
    overhead = (
        host.fit(linux.overhead, "linux.overhead", warnings) if linux.HasField("overhead") else None
    )
    if not linux.HasField("resources"):
        return None
    total = to_resources(host.fit(linux.resources, "linux.resources", warnings))
    return total if overhead is None else total + to_resources(overhead)


def _set_oom_score_adj(pid: int, value: int) -> None:
    """Negative values are denied on some hosts (ours): degrade to 0 with a warning."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        log.warning("oom_score_adj %d denied for pod init %d; keeping the default", value, pid)


async def _create(
    svc: SandboxService, sandbox_id: str, config: api.PodSandboxConfig, handler: str
) -> str:
    started = time.monotonic()
    ns_opts = config.linux.security_context.namespace_options
    host_net = ns_opts.network == NamespaceMode.NODE
    private_ipc = ns_opts.ipc != NamespaceMode.NODE
    bundle = svc.bundle_dir(sandbox_id)
    hostname = dns.pod_hostname(config)
    cg = svc.cgroupfs
    cgroup = pod_cgroup_path(svc, sandbox_id, config)
    # Which part of the pod cgroup is ours (kubelet makes its own) is recorded with the row,
    # before anything is made: a daemon killed half-way through making it removes it on restart.
    owned = _shared_ownership(svc, cgroup, await asyncio.to_thread(cg.missing, cgroup))
    sandbox = PodSandbox(
        id=sandbox_id,
        state=SandboxState.NOTREADY,
        created_at=time.time_ns(),
        config=config,
        runtime_handler=handler,
        bundle_dir=bundle,
        hostname=hostname,
        hostname_path=os.path.join(bundle, "hostname"),
        hosts_path=os.path.join(bundle, "hosts"),
        resolv_conf_path=os.path.join(bundle, "resolv.conf"),
        cgroup_parent=cgroup,
        cgroup_owned_from=owned,
        creating=True,
    )
    async with contextlib.AsyncExitStack() as undo:
        svc.store.add(sandbox)  # reserves the name; AlreadyExists names the holder
        undo.callback(svc.store.delete, sandbox_id)
        os.makedirs(bundle, mode=0o711)
        undo.callback(shutil.rmtree, bundle, True)

        # Pod cgroup: made (or adopted, when kubelet made it) and limited.
        if owned:
            undo.push_async_callback(asyncio.to_thread, cg.remove, cgroup, owned)
        await asyncio.to_thread(cg.create, cgroup)
        warnings: list[str] = []
        resources = pod_resources(config.linux, svc.host_cgroups, warnings)
        for warning in dict.fromkeys(warnings):  # resources and overhead may warn alike
            log.warning("pod %s: %s", sandbox_id[:12], warning)
        if resources is not None:
            await asyncio.to_thread(cg.apply, cgroup, resources)

        # Namespaces, pinned under the bundle; the PID namespace's init joins the pod cgroup.
        ns = await asyncio.to_thread(
            namespaces.create,
            os.path.join(bundle, "ns"),
            net=not host_net,
            ipc=private_ipc,
            uts=not host_net,
            pid=ns_opts.pid == NamespaceMode.POD,
            hostname=hostname,
            init_cgroup=lambda pid: cg.add_process(cgroup, pid),
            owner=sandbox_id,
            userns=idmap.validate(ns_opts),
        )
        undo.callback(_undo_namespaces, ns)
        sandbox = sandbox.replace(
            userns_path=ns.user,
            netns_path=ns.net,
            ipc_ns_path=ns.ipc,
            uts_ns_path=ns.uts,
            pid_ns_path=ns.pid or None,
            pid_init_pid=ns.init_pid,
        )
        svc.store.update(sandbox)
        if ns.init_pid and config.linux.resources.oom_score_adj:
            _set_oom_score_adj(ns.init_pid, config.linux.resources.oom_score_adj)

        if private_ipc:
            shm = os.path.join(bundle, "shm")
            await asyncio.to_thread(namespaces.mount_shm, shm)
            undo.callback(namespaces.unmount_shm, shm)
            sandbox = sandbox.replace(shm_path=shm)

        if not host_net:
            net = svc.network.network()
            # Recorded and undone before ADD: DEL cleans a chain that failed half-way.
            sandbox = sandbox.replace(network_name=net.name)
            svc.store.update(sandbox)
            undo.push_async_callback(_undo_network, svc, sandbox_id, ns.net, config, net.name)
            try:
                result = await svc.network.setup(sandbox_id, ns.net, config, net)
            except PluginError as e:
                raise NetworkSetupError(
                    f"failed to set up the network of pod {config.metadata.name!r}: {e}"
                ) from None
            ips = result_ips(result)
            sandbox = sandbox.replace(
                ip=ips[0] if ips else "",
                additional_ips=tuple(ips[1:]),
                network_result=result,
            )

        await asyncio.to_thread(namespaces.apply_sysctls, dict(config.linux.sysctls), ns)
        dns.write_hostname(sandbox.hostname_path, hostname)
        dns.write_hosts(
            sandbox.hosts_path,
            hostname,
            [sandbox.ip, *sandbox.additional_ips] if sandbox.ip else [],
            host_net,
        )
        dns.write_resolv_conf(sandbox.resolv_conf_path, config.dns_config)

        sandbox = sandbox.replace(state=SandboxState.READY, creating=False)
        svc.store.update(sandbox)
        undo.pop_all()
    log.info(
        "pod %s/%s is %s (ip %s) in %.1f ms",
        config.metadata.namespace, config.metadata.name, sandbox_id[:12], sandbox.ip or "host",
        (time.monotonic() - started) * 1000,
    )  # fmt: skip
    return sandbox_id


async def _undo_network(
    svc: SandboxService, sandbox_id: str, netns: str, config: api.PodSandboxConfig, name: str
) -> None:
    """Undo must not mask the error that caused it; a DEL that fails here is logged."""
    try:
        await svc.network.teardown(sandbox_id, netns, config, name)
    except Exception as e:
        log.warning("pod %s: network cleanup after a failed start: %s", sandbox_id[:12], e)


def _undo_namespaces(ns: namespaces.PinnedNamespaces) -> None:
    namespaces.stop_init(ns.init_pid)
    for path in (ns.net, ns.ipc, ns.uts, ns.pid, ns.user):
        namespaces.unpin(path)

"""PodSandboxStatus: state, IPs, namespace modes, and (verbose) where everything lives."""

from __future__ import annotations

import json
import time
from typing import Any

from google.protobuf import json_format

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.sandbox import namespaces
from criruntime.sandbox.model import PodSandbox
from criruntime.sandbox.service import SandboxService


def to_status(sandbox: PodSandbox) -> api.PodSandboxStatus:
    network = api.PodSandboxNetworkStatus()
    if sandbox.ip:
        network.ip = sandbox.ip
        network.additional_ips.extend(api.PodIP(ip=ip) for ip in sandbox.additional_ips)
    ns = sandbox.namespace_options
    return api.PodSandboxStatus(
        id=sandbox.id,
        metadata=sandbox.metadata,
        state=sandbox.state.to_api(),
        created_at=sandbox.created_at,
        network=network,
        linux=api.LinuxPodSandboxStatus(
            namespaces=api.Namespace(
                options=api.NamespaceOption(network=ns.network, pid=ns.pid, ipc=ns.ipc)
            )
        ),
        labels=sandbox.labels,
        annotations=sandbox.annotations,
        runtime_handler=sandbox.runtime_handler,
    )


def verbose_info(sandbox: PodSandbox) -> dict[str, str]:
    info: dict[str, Any] = {
        "pid": sandbox.pid_init_pid,
        "netNamespacePath": sandbox.netns_path,
        "netNamespaceClosed": bool(sandbox.netns_path)
        and not namespaces.is_pinned(sandbox.netns_path),
        "ipcNamespacePath": sandbox.ipc_ns_path,
        "utsNamespacePath": sandbox.uts_ns_path,
        "pidNamespacePath": sandbox.pid_ns_path or "",
        "cgroupParent": sandbox.cgroup_parent,
        "hostname": sandbox.hostname,
        "hostnamePath": sandbox.hostname_path,
        "hostsPath": sandbox.hosts_path,
        "resolvConfPath": sandbox.resolv_conf_path,
        "shmPath": sandbox.shm_path or "",
        "runtimeHandler": sandbox.runtime_handler,
        "cniNetwork": sandbox.network_name,
        "cniResult": sandbox.network_result or None,
        "config": json_format.MessageToDict(sandbox.config),
    }
    return {"info": json.dumps(info)}


def pod_sandbox_status(
    svc: SandboxService, request: api.PodSandboxStatusRequest
) -> api.PodSandboxStatusResponse:
    sandbox = svc.store.get(request.pod_sandbox_id)
    return api.PodSandboxStatusResponse(
        status=to_status(sandbox),
        info=verbose_info(sandbox) if request.verbose else {},
        timestamp=time.time_ns(),
    )

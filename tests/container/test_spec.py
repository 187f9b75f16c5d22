"""ContainerSpecBuilder and user resolution, without running anything."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.cgroups.host import HostCgroups
from criruntime.container import spec as spec_module
from criruntime.container.providers import ImageConfig, PodInfo
from criruntime.container.spec import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    ContainerSpecBuilder,
    SpecInputs,
    all_capabilities,
    seccomp_to_oci,
)
from criruntime.container.user import ResolvedUser, resolve_user
from criruntime.errors import InvalidArgument
from criruntime.oci import idmap
from tests.container.conftest import build_busybox_layer

HOST = HostCgroups(1, frozenset({"cpu", "cpuset", "memory", "hugetlb"}), swap=True)
POD = PodInfo(
    id="p", config=api.PodSandboxConfig(hostname="podhost"), ready=True, runtime_handler="",
    netns_path="/run/netns/x", ipc_ns_path="/run/ipc/x", uts_ns_path="/run/uts/x",
    cgroup_parent="/kubepods/pod1", hosts_path="/pod/hosts", resolv_conf_path="/pod/resolv",
    hostname_path="/pod/hostname", shm_path="/pod/shm",
)  # fmt: skip


def build(config: api.ContainerConfig, image: ImageConfig | None = None, pod: PodInfo = POD,
          **kw: object) -> dict:  # type: ignore[type-arg]  # fmt: skip
    inputs = SpecInputs(
        container_id="cid", config=config, pod=pod, image=image or ImageConfig(),
        rootfs="/rootfs", user=ResolvedUser(0, 0, [0]), host_cgroups=HOST,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return ContainerSpecBuilder(inputs).build().spec


def test_command_and_args_against_image() -> None:
    image = ImageConfig(entrypoint=["/ep"], cmd=["c1"], env=["A=1", "B=2"], working_dir="/w")
    assert build(api.ContainerConfig(), image)["process"]["args"] == ["/ep", "c1"]
    assert build(api.ContainerConfig(args=["x"]), image)["process"]["args"] == ["/ep", "x"]
    assert build(api.ContainerConfig(command=["/c"]), image)["process"]["args"] == ["/c"]
    assert build(api.ContainerConfig(command=["/c"], args=["y"]), image)["process"]["args"] == [
        "/c",
        "y",
    ]
    spec = build(
        api.ContainerConfig(command=["/c"], envs=[api.KeyValue(key="B", value="3")]), image
    )
    assert "A=1" in spec["process"]["env"] and "B=3" in spec["process"]["env"]
    assert spec["process"]["cwd"] == "/w"
    with pytest.raises(InvalidArgument):
        build(api.ContainerConfig())


@pytest.mark.parametrize(
    ("config", "image", "message"),
    [
        (api.ContainerConfig(envs=[api.KeyValue(key="", value="x")]), None, "name ''"),
        (api.ContainerConfig(envs=[api.KeyValue(key="A=B", value="x")]), None, "name 'A=B'"),
        (api.ContainerConfig(working_dir="rel"), None, "working_dir must be an absolute"),
        (api.ContainerConfig(), ImageConfig(working_dir="w"), "got 'w'"),
    ],
)
def test_env_and_cwd_runc_would_refuse_are_invalid_at_create(
    config: api.ContainerConfig, image: ImageConfig | None, message: str
) -> None:
    config.command.append("/x")
    with pytest.raises(InvalidArgument, match=message):
        build(config, image)


def test_namespaces_cgroup_and_pod_files() -> None:
    spec = build(api.ContainerConfig(command=["x"]))
    ns = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert ns == {
        "mount": None, "network": "/run/netns/x", "ipc": "/run/ipc/x", "uts": "/run/uts/x",
        "pid": None,  # no pod-level pid namespace: the container gets its own
    }  # fmt: skip
    assert spec["hostname"] == "podhost"
    assert spec["linux"]["cgroupsPath"] == "/kubepods/pod1/cid"
    sources = {m["destination"]: m["source"] for m in spec["mounts"]}
    assert sources["/etc/hosts"] == "/pod/hosts" and sources["/dev/shm"] == "/pod/shm"


def test_security_defaults_privileged_and_caps() -> None:
    spec = build(api.ContainerConfig(command=["x"]))
    assert spec["process"]["capabilities"]["bounding"] == DEFAULT_CAPABILITIES
    assert spec["linux"]["maskedPaths"] == DEFAULT_MASKED_PATHS
    assert "seccomp" not in spec["linux"]
    sc = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=["sys_admin"], drop_capabilities=["KILL"]),
        masked_paths=["/m"], readonly_paths=[],
    )  # fmt: skip
    spec = build(
        api.ContainerConfig(command=["x"], linux=api.LinuxContainerConfig(security_context=sc))
    )
    caps = spec["process"]["capabilities"]["effective"]
    assert "CAP_SYS_ADMIN" in caps and "CAP_KILL" not in caps
    assert spec["linux"]["maskedPaths"] == ["/m"]
    priv = api.LinuxContainerSecurityContext(privileged=True)
    spec = build(
        api.ContainerConfig(command=["x"], linux=api.LinuxContainerConfig(security_context=priv))
    )
    assert (
        "maskedPaths" not in spec["linux"]
        and "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["bounding"]
    )


def test_mounts_propagation_and_errors(tmp_path: str) -> None:
    target = os.path.join(str(tmp_path), "real")
    os.makedirs(target)
    link = os.path.join(str(tmp_path), "link")
    os.symlink(target, link)
    mount = api.Mount(
        container_path="/data", host_path=link, readonly=True,
        propagation=api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
    )  # fmt: skip
    spec = build(api.ContainerConfig(command=["x"], mounts=[mount]))
    data = next(m for m in spec["mounts"] if m["destination"] == "/data")
    assert data["source"] == target and data["options"] == ["rbind", "rslave", "ro"]
    # The rootfs propagation must let host mounts reach the container (rslave) or both ways.
    assert spec["linux"]["rootfsPropagation"] == "rslave"
    shared = api.Mount(
        container_path="/s", host_path=target,
        propagation=api.MountPropagation.PROPAGATION_BIDIRECTIONAL,
    )  # fmt: skip
    spec = build(api.ContainerConfig(command=["x"], mounts=[mount, shared]))
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    assert "rootfsPropagation" not in build(api.ContainerConfig(command=["x"]))["linux"]
    rro = api.Mount(container_path="/r", host_path=target, readonly=True, recursive_read_only=True)
    with pytest.raises(InvalidArgument, match="not supported"):
        build(api.ContainerConfig(command=["x"], mounts=[rro]))
    spec = build(
        api.ContainerConfig(command=["x"], mounts=[rro]), recursive_read_only_supported=True
    )
    assert "rro" in next(m for m in spec["mounts"] if m["destination"] == "/r")["options"]


_MAP = [api.IDMapping(container_id=0, host_id=65536, length=65536)]
USERNS = api.NamespaceOption(  # a valid pod user namespace, in a pod that has none
    userns_options=api.UserNamespace(mode=api.NamespaceMode.POD, uids=_MAP, gids=_MAP)
)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (api.ContainerConfig(mounts=[api.Mount(container_path="/iv", image=api.ImageSpec(
            image="busybox"))]), "image volume not mounted"),
        (api.ContainerConfig(mounts=[api.Mount(container_path="/i", host_path="/tmp",
            uidMappings=[api.IDMapping(host_id=1000, length=1)])]), "pod's user namespace"),
        (api.ContainerConfig(CDI_devices=[api.CDIDevice(name="vendor.com/gpu=0")]),
         "does not support CDI"),
        (api.ContainerConfig(linux=api.LinuxContainerConfig(
            security_context=api.LinuxContainerSecurityContext(namespace_options=USERNS))),
         "user namespace must be its pod's"),
    ],
)  # fmt: skip
def test_unsupported_features_are_refused_not_ignored(
    config: api.ContainerConfig, message: str
) -> None:
    # Ignored, the container would run without the device, volume or isolation asked for.
    config.command.append("/x")
    with pytest.raises(InvalidArgument, match=message):
        build(config)


def test_image_volume_is_a_read_only_noexec_bind_of_the_mounted_image() -> None:
    mount = api.Mount(container_path="/iv/", image=api.ImageSpec(image="x"), readonly=True)
    spec = build(api.ContainerConfig(command=["x"], mounts=[mount]),
                 image_volumes={"/iv": "/run/b/image-volumes/0"})  # fmt: skip
    (m,) = [m for m in spec["mounts"] if m["destination"] == "/iv/"]
    assert m["source"] == "/run/b/image-volumes/0"
    assert {"ro", "noexec", "nosuid", "nodev", "rprivate"} <= set(m["options"])


def test_host_user_namespace_is_fine() -> None:
    host = api.NamespaceOption(userns_options=api.UserNamespace(mode=api.NamespaceMode.NODE))
    security = api.LinuxContainerSecurityContext(namespace_options=host)
    build(api.ContainerConfig(command=["/x"], linux=api.LinuxContainerConfig(
        security_context=security)))  # fmt: skip


MAP = _MAP
POD_USERNS = USERNS


def test_container_joins_the_pods_user_namespace_first() -> None:
    pod = dataclasses.replace(POD, userns_path="/pod/ns/user", userns=idmap.validate(POD_USERNS))
    security = api.LinuxContainerSecurityContext(namespace_options=POD_USERNS)
    mount = api.Mount(container_path="/v", host_path="/tmp", uidMappings=MAP, gidMappings=MAP)
    linux = api.LinuxContainerConfig(security_context=security)
    config = api.ContainerConfig(command=["/x"], mounts=[mount], linux=linux)
    spec = build(config, pod=pod)
    assert spec["linux"]["namespaces"][:2] == [
        {"type": "mount"},
        {"type": "user", "path": "/pod/ns/user"},
    ]
    oci_map = [{"containerID": 0, "hostID": 65536, "size": 65536}]
    assert spec["linux"]["uidMappings"] == spec["linux"]["gidMappings"] == oci_map
    # The pod's namespace is joined whether or not the container repeats the pod's options...
    assert build(api.ContainerConfig(command=["/x"]), pod=pod)["linux"]["namespaces"][1] == {
        "type": "user",
        "path": "/pod/ns/user",
    }
    # ... but other mappings, or the node's user namespace, are refused.
    other = api.NamespaceOption()
    other.CopyFrom(POD_USERNS)
    other.userns_options.uids[0].host_id = 131072
    host = api.NamespaceOption(userns_options=api.UserNamespace(mode=api.NamespaceMode.NODE))
    for options in (other, host):
        security = api.LinuxContainerSecurityContext(namespace_options=options)
        with pytest.raises(InvalidArgument, match="must be its pod's"):
            build(api.ContainerConfig(command=["/x"], linux=api.LinuxContainerConfig(
                security_context=security)), pod=pod)  # fmt: skip
    skewed = api.Mount(container_path="/v", host_path="/tmp", uidMappings=[
        api.IDMapping(container_id=0, host_id=1, length=5)], gidMappings=MAP)  # fmt: skip
    with pytest.raises(InvalidArgument, match="mappings must be those of the pod"):
        build(api.ContainerConfig(command=["/x"], mounts=[skewed]), pod=pod)


def test_devices_and_their_cgroup_rules() -> None:
    null = api.Device(container_path="/dev/mynull", host_path="/dev/null", permissions="rw")
    spec = build(api.ContainerConfig(command=["x"], devices=[null]))
    (device,) = spec["linux"]["devices"]
    assert (device["path"], device["type"], device["major"], device["minor"]) == (
        "/dev/mynull", "c", 1, 3,
    )  # fmt: skip
    rules = spec["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}  # deny all, then allow what was asked
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"} in rules
    for bad, message in (
        (api.Device(container_path="/dev/x", host_path="/dev/nope"), "No such file"),
        (api.Device(container_path="/dev/x", host_path="/etc/hostname"), "is not a device"),
        (api.Device(container_path="/dev/x", host_path="/dev/null", permissions="rx"), "r, w, m"),
        (api.Device(container_path="dev/x", host_path="/dev/null"), "absolute"),
        # A directory is walked for its devices: only /dev's, never the whole host.
        (api.Device(container_path="/dev/x", host_path="/"), "must be under /dev"),
        (api.Device(container_path="/dev/x", host_path="/dev/../proc"), "must be under /dev"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            build(api.ContainerConfig(command=["x"], devices=[bad]))


def test_resources_and_oom_clamp() -> None:
    resources = api.LinuxContainerResources(
        cpu_shares=256, cpu_quota=50000, cpu_period=100000, cpuset_cpus="0",
        memory_limit_in_bytes=1 << 20, oom_score_adj=-998,
        hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=0)],
    )  # fmt: skip
    spec = build(
        api.ContainerConfig(command=["x"], linux=api.LinuxContainerConfig(resources=resources))
    )
    r = spec["linux"]["resources"]
    assert r["cpu"] == {"shares": 256, "quota": 50000, "period": 100000, "cpus": "0"}
    assert r["memory"]["limit"] == 1 << 20
    assert r["hugepageLimits"] == [{"pageSize": "2MB", "limit": 0}]
    assert spec["process"]["oomScoreAdj"] in (0, -998)


def _localhost_seccomp(path: str) -> api.ContainerConfig:
    profile = api.SecurityProfile(
        profile_type=api.SecurityProfile.ProfileType.Localhost, localhost_ref=path
    )
    security = api.LinuxContainerSecurityContext(seccomp=profile)
    return api.ContainerConfig(command=["/x"], linux=api.LinuxContainerConfig(
        security_context=security))  # fmt: skip


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ([1, 2], "not a JSON object"),
        ({"defaultAction": "SCMP_ACT_EXPLODE"}, "unknown action 'SCMP_ACT_EXPLODE'"),
        ({"architectures": ["SCMP_ARCH_Z80"]}, "unknown architecture 'SCMP_ARCH_Z80'"),
        ({"archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["x"]}]},
         "unknown architecture 'x'"),
        ({"syscalls": "read"}, "syscalls must be a list of objects"),
        ({"syscalls": [{"names": ["read"], "action": "ALLOW"}]}, "unknown action 'ALLOW'"),
        ({"syscalls": [{"names": [1], "action": "SCMP_ACT_ALLOW"}]}, "names must be strings"),
        ({"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": []}]},
         "includes must be an object"),
        ({"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [[[1]]]}]},
         "syscall args must be objects"),
        ({"flags": [{"a": 1}]}, "flags must be a list of strings"),
    ],
)  # fmt: skip
def test_localhost_seccomp_profile_runc_would_refuse(
    tmp_path: str, profile: object, message: str
) -> None:
    # These were INTERNAL (a Python error on the shape) or failed only at `runc create`.
    path = os.path.join(str(tmp_path), "profile.json")
    with open(path, "w") as f:
        json.dump(profile, f)
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        build(_localhost_seccomp(path))


def test_localhost_seccomp_profile_with_unknown_syscalls_is_fine(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "profile.json")
    with open(path, "w") as f:
        json.dump(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["not_a_syscall"], "action": "SCMP_ACT_ERRNO"}],
            },
            f,
        )
    seccomp = build(_localhost_seccomp(path))["linux"]["seccomp"]  # fmt: skip
    assert seccomp["syscalls"] == [{"names": ["not_a_syscall"], "action": "SCMP_ACT_ERRNO"}]


def test_seccomp_profile_conversion() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {
                "names": ["mount"],
                "action": "SCMP_ACT_ERRNO",
                "excludes": {"caps": ["CAP_SYS_ADMIN"]},
            },
            {"names": ["reboot"], "action": "SCMP_ACT_ERRNO"},
        ],
    }
    assert [s["names"] for s in seccomp_to_oci(profile, set())["syscalls"]] == [
        ["mount"],
        ["reboot"],
    ]
    assert [s["names"] for s in seccomp_to_oci(profile, {"CAP_SYS_ADMIN"})["syscalls"]] == [
        ["reboot"]
    ]


def test_resolve_user(tmp_path: str) -> None:
    root = os.path.join(str(tmp_path), "root")
    build_busybox_layer(root)
    sc = api.LinuxContainerSecurityContext
    assert resolve_user(root, sc(), "") == ResolvedUser(0, 0, [0], "/root", "root")
    u = resolve_user(root, sc(), "www")
    assert (u.uid, u.gid, u.additional_gids) == (33, 33, [33, 2000])
    u = resolve_user(root, sc(), "1000:extra")
    assert (u.uid, u.gid) == (1000, 2000)
    u = resolve_user(root, sc(run_as_user=api.Int64Value(value=4242)), "www")
    assert (u.uid, u.gid, u.home) == (4242, 0, "/")
    u = resolve_user(root, sc(run_as_username="app", run_as_group=api.Int64Value(value=7)), "")
    assert (u.uid, u.gid) == (1000, 7)
    with pytest.raises(InvalidArgument):
        resolve_user(root, sc(run_as_username="nobody-here"), "")
    with pytest.raises(InvalidArgument):
        resolve_user(root, sc(run_as_group=api.Int64Value(value=1)), "")
    # Ids are 32 bits; 2**32 - 1 is (uid_t)-1, "unchanged" to the kernel.
    for bad in (-1, 2**32 - 1, 2**62):
        with pytest.raises(InvalidArgument, match="run_as_user must be between 0 and"):
            resolve_user(root, sc(run_as_user=api.Int64Value(value=bad)), "")
    assert resolve_user(root, sc(run_as_user=api.Int64Value(value=2**32 - 2)), "").uid == 2**32 - 2
    with pytest.raises(InvalidArgument, match="run_as_group"):
        resolve_user(
            root, sc(run_as_user=api.Int64Value(value=1), run_as_group=api.Int64Value(value=-2)), ""
        )
    with pytest.raises(InvalidArgument, match="supplemental_groups"):
        resolve_user(root, sc(supplemental_groups=[2**40]), "")
    with pytest.raises(InvalidArgument, match="the user id"):
        resolve_user(root, sc(), "99999999999")


def test_all_capabilities_stay_inside_the_daemons_bounding_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # runc cannot grant what the daemon does not hold (this VM drops CAP_SYS_RESOURCE).
    from criruntime.container import spec as spec_module

    without_sys_resource = ((1 << 41) - 1) & ~(1 << 24)
    monkeypatch.setattr(spec_module, "_bounding_set", lambda: without_sys_resource)
    spec_module.all_capabilities.cache_clear()
    try:
        caps = spec_module.all_capabilities()
        assert "CAP_SYS_RESOURCE" not in caps
        assert {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_CHOWN"} <= set(caps)
    finally:
        spec_module.all_capabilities.cache_clear()


def test_runtime_message_prefers_error_lines() -> None:
    from criruntime.oci.runtime import _runtime_message

    raw = (
        'time="t" level=warning msg="cannot toggle freezer: cgroups not configured"\n'
        'time="t" level=error msg="runc create failed: unable to apply caps"\n'
    )
    assert _runtime_message(raw) == "runc create failed: unable to apply caps"
    assert _runtime_message("plain failure\n") == "plain failure"


def _with_caps(*add: str) -> api.ContainerConfig:
    caps = api.Capability(add_capabilities=list(add))
    security = api.LinuxContainerSecurityContext(capabilities=caps)
    return api.ContainerConfig(
        command=["x"], linux=api.LinuxContainerConfig(security_context=security)
    )


def test_capabilities_outside_the_bounding_set_are_refused_at_create(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This VM drops CAP_SYS_RESOURCE; runc used to fail the start with its own words.
    held = [c for c in all_capabilities() if c != "CAP_SYS_RESOURCE"]
    monkeypatch.setattr(spec_module, "all_capabilities", lambda: held)
    with pytest.raises(InvalidArgument, match="capability CAP_SYS_RESOURCE is outside"):
        build(_with_caps("SYS_RESOURCE"))
    assert "CAP_SYS_ADMIN" in build(_with_caps("SYS_ADMIN"))["process"]["capabilities"]["bounding"]
    assert set(build(_with_caps("ALL"))["process"]["capabilities"]["bounding"]) == set(held)


def test_the_bounding_set_is_read_from_the_host() -> None:
    with open("/proc/self/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    for cap in all_capabilities():
        assert mask >> ALL_CAPABILITIES.index(cap) & 1, cap


def test_an_image_passwd_that_is_a_fifo_is_invalid_argument(tmp_path: str) -> None:
    # An image's /etc/passwd is read in a thread, and only as a bounded regular file.
    root = os.path.join(str(tmp_path), "root")
    build_busybox_layer(root)
    os.unlink(os.path.join(root, "etc", "passwd"))
    os.mkfifo(os.path.join(root, "etc", "passwd"))
    with pytest.raises(InvalidArgument, match="/etc/passwd is not a regular file"):
        resolve_user(root, api.LinuxContainerSecurityContext(), "www")

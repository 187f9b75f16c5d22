"""Pods with their own user namespace (KEP-127) through the real daemon: a pod network from the
reference CNI plugins, busybox from a docker-registry on 127.0.0.1, runc under conmon. The
container's root is the mapped host id outside; its rootfs and volumes are idmapped mounts."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator

import grpc
import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon
from tests.container.daemon_env import (
    Cluster,
    ImageSet,
    container_config,
    force_cleanup,
    host_pod_config,
    mounts_under,
    pull,
    read_log,
    sh,
    wait_for,
)
from tests.sandbox.podnet import PodNet

HOST_ID = 65536 * 7  # where the pod's ids 0..65535 live on the host
MAP = [api.IDMapping(container_id=0, host_id=HOST_ID, length=65536)]
POD = api.NamespaceMode.POD
NS_GET_USERNS = 0xB701  # ioctl: the user namespace that owns a namespace


@pytest.fixture
def cl(daemon: Daemon, imgs: ImageSet) -> Iterator[Cluster]:
    # runc sets the container up from inside the user namespace, as the mapped root: the
    # state dir must be traversable, as /run is (a test's temp dir is 0700).
    os.chmod(daemon.base, 0o711)
    net = PodNet(daemon)
    net.link_plugins("bridge", "host-local", "loopback")
    net.conflist(portmap=False)
    cluster = Cluster(daemon)
    try:
        pull(daemon, imgs.busybox_ref)
        yield cluster
    finally:
        cluster.cleanup()
        net.cleanup()
        force_cleanup(daemon)


def userns_options(uids: list[api.IDMapping], gids: list[api.IDMapping]) -> api.NamespaceOption:
    return api.NamespaceOption(
        network=POD, pid=POD, ipc=POD,  # a pod PID namespace too: its init is the helper's
        userns_options=api.UserNamespace(mode=POD, uids=uids, gids=gids),
    )  # fmt: skip


def userns_pod(d: Daemon, **kw: list[api.IDMapping]) -> api.PodSandboxConfig:
    config = host_pod_config(d)
    options = config.linux.security_context.namespace_options
    options.CopyFrom(userns_options(kw.get("uids", MAP), kw.get("gids", MAP)))
    return config


def owner_ns_inode(ns_file: str) -> int:
    fd = os.open(ns_file, os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
        try:
            return os.fstat(owner).st_ino
        finally:
            os.close(owner)
    finally:
        os.close(fd)


def test_status_advertises_user_namespaces(daemon: Daemon) -> None:
    handlers = daemon.runtime.Status(api.StatusRequest()).runtime_handlers
    assert handlers and all(h.features.user_namespaces for h in handlers)


def test_container_runs_as_the_mapped_ids_on_idmapped_mounts(cl: Cluster, imgs: ImageSet) -> None:
    d = cl.daemon
    volume = tempfile.mkdtemp(prefix="crir-vol-")
    try:
        with open(os.path.join(volume, "host-file"), "w") as f:
            f.write("from the host\n")
        os.chmod(volume, 0o777)
        pod = cl.run_pod(userns_pod(d))
        image_volume = d.image.ImageStatus(api.ImageStatusRequest(
            image=api.ImageSpec(image=pull(d, imgs.other_ref)))).image.id  # fmt: skip
        config = container_config(imgs.busybox_ref, **sh(
            "cat /proc/self/uid_map; id -u; stat -c %u /etc/marker; stat -c %u /vol/host-file; "
            "stat -c %u /img/etc/marker; cat /img/etc/marker; "
            "echo hi > /written; echo v > /vol/by-container; echo done; exec sleep 1000"
        ), mounts=[
            api.Mount(container_path="/vol", host_path=volume, uidMappings=MAP, gidMappings=MAP),
            api.Mount(container_path="/img", image=api.ImageSpec(image=image_volume),
                      readonly=True, uidMappings=MAP, gidMappings=MAP),
        ])  # fmt: skip
        config.linux.security_context.namespace_options.CopyFrom(userns_options(MAP, MAP))
        cid = cl.run(pod, config)
        log = cl.log_file(pod)
        wait_for(lambda: ("stdout", "F", "done") in read_log(log), what="container output")
        out = [text.split() for _, _, text in read_log(log)]
        # uid_map; id -u; the image's, the volume's, the image volume's root files are root
        expected = [["0", str(HOST_ID), "65536"], ["0"], ["0"], ["0"], ["0"], ["other"]]
        assert out[:6] == expected, out

        # Outside: the processes run as the mapped ids, in the pod's user namespace, which
        # owns the pod's network, IPC and UTS namespaces.
        pid = cl.info(cid)["pid"]
        with open(f"/proc/{pid}/status") as f:
            ids = {k: v.split() for k, v in (ln.split(":", 1) for ln in f) if k in ("Uid", "Gid")}
        assert ids == {"Uid": [str(HOST_ID)] * 4, "Gid": [str(HOST_ID)] * 4}
        pod_ns = os.path.join(d.state, "sandboxes", pod, "ns")
        userns = os.stat(os.path.join(pod_ns, "user")).st_ino
        assert (
            os.stat(f"/proc/{pid}/ns/user").st_ino == userns != os.stat("/proc/self/ns/user").st_ino
        )
        for kind in ("net", "ipc", "uts", "pid"):
            assert owner_ns_inode(os.path.join(pod_ns, kind)) == userns, kind
            assert (
                os.stat(f"/proc/{pid}/ns/{kind}").st_ino
                == os.stat(os.path.join(pod_ns, kind)).st_ino
            )

        # The rootfs: the image's root-owned files are the mapped root seen from the host (no
        # layer chowned), and what root wrote lands in the upper dir as the mapped root.
        rootfs = os.path.join(d.state, "containers", cid, "rootfs")
        assert os.stat(os.path.join(rootfs, "etc", "marker")).st_uid == HOST_ID
        layers = os.path.join(d.root, "images", "layers")
        assert {os.stat(os.path.join(layers, n, "diff", "etc", "marker")).st_uid
                for n in os.listdir(layers) if not n.startswith(".")} == {0}  # fmt: skip
        written = os.stat(os.path.join(d.root, "containers", cid, "upper", "written"))
        assert (written.st_uid, written.st_gid) == (HOST_ID, HOST_ID)
        # The volume is idmapped the same way: root inside is root on the host's files.
        assert os.stat(os.path.join(volume, "by-container")).st_uid == 0

        cl.stop(cid)
        cl.remove(cid)
        assert mounts_under(os.path.join(d.state, "containers")) == []
        d.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod))
        assert mounts_under(pod_ns) == []
    finally:
        shutil.rmtree(volume, ignore_errors=True)


def test_a_volume_that_cannot_be_idmapped_is_refused_by_name(cl: Cluster, imgs: ImageSet) -> None:
    d = cl.daemon
    pod = cl.run_pod(userns_pod(d))
    before = (mounts_under(d.base), cl.list())
    mount = api.Mount(container_path="/k", host_path="/sys/kernel", readonly=True)  # sysfs
    config = container_config(imgs.busybox_ref, mounts=[mount], **sh("exec sleep 1000"))
    with pytest.raises(grpc.RpcError) as e:
        cl.create(pod, config)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "/k" in str(e.value.details()) and "/sys/kernel" in str(e.value.details())
    assert (mounts_under(d.base), cl.list()) == before


def test_invalid_mappings_are_refused(cl: Cluster) -> None:
    d = cl.daemon
    before = mounts_under(d.base)
    m = api.IDMapping
    cases = [
        # two mappings of container id 0 (critest's "more than one mapping")
        ([m(container_id=0, host_id=HOST_ID, length=65536),
          m(container_id=0, host_id=HOST_ID * 2, length=65536)], "overlap"),
        ([m(container_id=0, host_id=HOST_ID, length=65536),
          m(container_id=65536, host_id=HOST_ID + 100, length=65536)], "overlap"),
        ([m(container_id=1, host_id=HOST_ID, length=65536)], "container id 0"),
        ([m(container_id=0, host_id=0, length=65536)], "host id 0"),
        ([m(container_id=0, host_id=HOST_ID, length=0)], "length"),
        ([], "needs uid mappings"),
    ]  # fmt: skip
    for uids, words in cases:
        with pytest.raises(grpc.RpcError) as e:
            cl.run_pod(userns_pod(d, uids=uids))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in str(
            e.value.details()
        ), (uids, e.value.details())
    for mode in (api.NamespaceMode.CONTAINER, api.NamespaceMode.TARGET):
        config = userns_pod(d)
        config.linux.security_context.namespace_options.userns_options.mode = mode
        with pytest.raises(grpc.RpcError) as e:
            cl.run_pod(config)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    config = userns_pod(d)
    config.linux.security_context.namespace_options.network = api.NamespaceMode.NODE
    with pytest.raises(grpc.RpcError) as e:
        cl.run_pod(config)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "network" in str(
        e.value.details()
    )
    assert d.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert mounts_under(d.base) == before


def test_user_namespace_pod_survives_a_daemon_restart(cl: Cluster, imgs: ImageSet) -> None:
    """The pinned user namespace and the containers' idmapped mounts outlive the daemon; a
    container made after the restart joins the same namespace."""
    d = cl.daemon
    pod = cl.run_pod(userns_pod(d))
    first = cl.run(pod, container_config(imgs.busybox_ref, name="a", **sh("exec sleep 1000")))
    userns = os.stat(f"/proc/{cl.info(first)['pid']}/ns/user").st_ino
    d.kill9()
    d.start()
    assert cl.status(first).status.state == api.ContainerState.CONTAINER_RUNNING
    second = cl.run(pod, container_config(imgs.busybox_ref, name="b", **sh(
        "cat /proc/self/uid_map; echo x > /f; exec sleep 1000")))  # fmt: skip
    wait_for(lambda: read_log(cl.log_file(pod, "b")), what="output of b")
    assert read_log(cl.log_file(pod, "b"))[0][2].split() == ["0", str(HOST_ID), "65536"]
    assert os.stat(f"/proc/{cl.info(second)['pid']}/ns/user").st_ino == userns
    assert os.stat(os.path.join(d.root, "containers", second, "upper", "f")).st_uid == HOST_ID

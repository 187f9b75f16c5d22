"""The OCI adapter on its own: conmon + runc with a hand-written config.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from criruntime.errors import CriError, NotFound
from criruntime.oci.runtime import OciError, OciRuntime, read_exit_status
from tests.container.conftest import build_busybox_layer, run


@pytest.fixture
def bundle() -> Iterator[tuple[OciRuntime, str]]:
    base = tempfile.mkdtemp(prefix="crir-oci-", dir="/tmp")
    runtime = OciRuntime("runc", "runc", os.path.join(base, "state"))
    b = os.path.join(base, "bundle")
    build_busybox_layer(os.path.join(b, "rootfs"))
    try:
        yield runtime, b
    finally:
        subprocess.run(
            ["runc", "--root", runtime.root, "delete", "-f", "t"], capture_output=True, check=False
        )
        shutil.rmtree(base, ignore_errors=True)


def write_config(bundle: str, args: list[str]) -> None:
    spec = {
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": os.path.join(bundle, "rootfs")},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]},
    }
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)


def test_create_start_kill_delete(bundle: tuple[OciRuntime, str]) -> None:
    runtime, b = bundle
    write_config(b, ["sleep", "1000"])
    log = os.path.join(b, "log")
    pid = run(runtime.create("t", b, log))
    assert pid > 0
    state = run(runtime.state("t"))
    assert state is not None and state.status == "created"
    run(runtime.start("t"))
    assert read_exit_status(b) is None
    run(runtime.kill("t", signal.SIGTERM))  # pid 1 without a handler ignores SIGTERM
    assert run(runtime.wait_exit(b, 0.3)) is None  # polling conmon's files
    assert run(runtime.wait_exit(b, 0.3, pid)) is None  # sleeping on the init's pidfd
    run(runtime.kill("t", signal.SIGKILL))
    status = run(runtime.wait_exit(b, 5, pid))
    assert status is not None and status.code == 128 + signal.SIGKILL and not status.oom_killed
    assert run(runtime.wait_exit(b, 5, pid)) == status  # the init is gone: the file answers
    assert run(runtime.wait_exit(b, 5)) == status
    run(runtime.kill("t", signal.SIGKILL))  # already stopped: not an error
    run(runtime.delete("t", force=True))
    run(runtime.delete("t"))  # already gone: not an error
    assert run(runtime.state("t")) is None


def test_create_error_is_reported(bundle: tuple[OciRuntime, str]) -> None:
    runtime, b = bundle
    write_config(b, ["/no/such/binary"])
    with open(os.path.join(b, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["cwd"] = "relative"  # runc refuses a relative cwd at create
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(spec, f)
    with pytest.raises(OciError):
        run(runtime.create("t", b, os.path.join(b, "log")))


def test_start_unknown_container(bundle: tuple[OciRuntime, str]) -> None:
    runtime, _ = bundle
    with pytest.raises(NotFound):
        run(runtime.start("nope"))


def test_runc_start_through_the_exec_fifo(
    bundle: tuple[OciRuntime, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, b = bundle
    write_config(b, ["sleep", "1000"])
    pid = run(runtime.create("t", b, os.path.join(b, "log")))
    fifo = os.path.join(runtime.root, "t", "exec.fifo")
    assert os.path.exists(fifo)
    real_run = runtime._run

    async def no_start(*args: str, **kwargs: object) -> tuple[int, bytes, bytes]:
        assert args[0] != "start", "the runc start subprocess ran"
        return await real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "_run", no_start)
    run(runtime.start("t", pid))
    assert not os.path.exists(fifo)
    state = run(runtime.state("t"))
    assert state is not None and (state.status, state.pid) == ("running", pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"sleep", b"1000"]  # init has exec'd it
    monkeypatch.undo()
    with pytest.raises(CriError):
        run(runtime.start("t", pid))  # running already: runc start says so


def test_runc_start_falls_back_when_init_died(bundle: tuple[OciRuntime, str]) -> None:
    runtime, b = bundle
    write_config(b, ["sleep", "1000"])
    pid = run(runtime.create("t", b, os.path.join(b, "log")))
    os.kill(pid, signal.SIGKILL)  # runc init, blocked on the fifo
    with pytest.raises(CriError):
        run(runtime.start("t", pid))

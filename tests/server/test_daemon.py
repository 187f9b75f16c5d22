"""The daemon process: socket, locks, signals, config errors, logs and metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable

import pytest

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import REPO, Daemon


def test_socket_mode_is_0660(shared_daemon: Daemon) -> None:
    mode = os.stat(shared_daemon.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def _run_second(d: Daemon, *, socket_path: str, root: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "criruntime", "serve", "--config", d.config_path,
        "--socket", socket_path, "--root", root, "--state", os.path.join(d.base, "state2"),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=REPO)


def test_second_daemon_on_same_socket_refuses(daemon: Daemon) -> None:
    second = _run_second(daemon, socket_path=daemon.socket, root=os.path.join(daemon.base, "r2"))
    assert second.returncode == 1
    assert f"socket {daemon.socket} is in use by another criruntime" in second.stderr
    assert f"pid {daemon.proc.pid if daemon.proc else ''}" in second.stderr
    daemon.runtime.Version(api.VersionRequest())  # the first one still owns the socket


def test_second_daemon_on_same_root_refuses(daemon: Daemon) -> None:
    second = _run_second(daemon, socket_path=os.path.join(daemon.base, "s2.sock"), root=daemon.root)
    assert second.returncode == 1
    assert f"root dir {daemon.root} is in use" in second.stderr
    assert not os.path.exists(os.path.join(daemon.base, "s2.sock"))
    daemon.runtime.Version(api.VersionRequest())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_and_removes_socket(daemon: Daemon, sig: int) -> None:
    assert daemon.stop(sig) == 0
    assert not os.path.exists(daemon.socket)
    assert "stopped" in daemon.logs()


def test_restart_after_kill9_reclaims_stale_socket(daemon: Daemon) -> None:
    daemon.kill9()
    assert os.path.exists(daemon.socket)  # a crash leaves the socket file behind
    daemon.start()
    assert daemon.runtime.Version(api.VersionRequest()).runtime_name == "criruntime"


BAD_CONFIGS = [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[cni]\nconf_dirr = '/x'\n", "unknown key 'cni.conf_dirr'"),
    ("log_level = 'loud'\n", "key 'log_level': must be one of"),
    ("[metrics]\naddress = 'localhost'\n", "key 'metrics.address': must be HOST:PORT"),
    ("[cni]\nbin_dirs = '/opt/cni/bin'\n", "key 'cni.bin_dirs': must be an array"),
    ("[cni]\nconf_dir = 'relative/dir'\n", "key 'cni.conf_dir': must be an absolute path"),
    ("default_runtime = 'kata'\n", "key 'default_runtime': runtime 'kata' is not defined"),
    ("[runtimes.kata]\npath = 3\n", "key 'runtimes.\"kata\".path': must be a string, not integer"),
    ("[registry.mirrors.'docker.io']\nendpoints = ['ftp://x']\n", "must start with http://"),
    ("this is = = not toml\n", "not valid TOML"),
]


@pytest.mark.parametrize(("toml", "message"), BAD_CONFIGS)
def test_bad_config_stops_startup_with_file_key_and_reason(
    make_daemon: Callable[..., Daemon], toml: str, message: str
) -> None:
    d = make_daemon(start=False)
    d.write_config()
    with open(d.config_path, "w") as f:
        f.write(toml)
    result = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 1
    assert d.config_path in result.stderr
    assert message in result.stderr
    assert not os.path.exists(d.socket)


def test_missing_explicit_config_file_is_an_error(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon(start=False)
    result = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 1
    assert f"{d.config_path}: no such file" in result.stderr


def test_database_from_a_newer_criruntime_stops_startup(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon(start=False)
    d.write_config()
    os.makedirs(d.root)
    db = os.path.join(d.root, "criruntime.db")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    result = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 1, result.stderr  # a message, not a traceback
    assert f"cannot start: {db}: schema version 999 is newer" in result.stderr
    assert "Traceback" not in result.stderr and not os.path.exists(d.socket)
    with open("/proc/self/mountinfo") as f:  # nor the state dir's bind for crun's namespace
        assert not [line for line in f if line.split()[4].startswith(d.base)]


def test_json_logs_carry_a_request_id_per_rpc(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon(args=["--log-format", "json"])
    d.runtime.Version(api.VersionRequest())
    d.runtime.RuntimeConfig(api.RuntimeConfigRequest())
    d.stop()
    entries = [json.loads(line) for line in d.logs().splitlines() if line.startswith("{")]
    rpcs = [e for e in entries if e["logger"] == "criruntime.rpc"]
    ids = {e["msg"].split()[0]: e["request_id"] for e in rpcs}
    assert set(ids) >= {"Version", "RuntimeConfig"}
    assert ids["Version"] != ids["RuntimeConfig"]
    assert all(len(i) == 12 for i in ids.values())
    assert all("ms" in e for e in rpcs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_count_rpcs_by_code(make_daemon: Callable[..., Daemon]) -> None:
    port = _free_port()
    d = make_daemon(f'[metrics]\naddress = "127.0.0.1:{port}"\n')
    d.runtime.Version(api.VersionRequest())
    d.runtime.Version(api.VersionRequest())
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        d.runtime.Attach(api.AttachRequest())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert (
        'criruntime_grpc_requests_total{code="OK",method="Version",service="RuntimeService"} 2.0'
        in text
    )
    assert 'code="INVALID_ARGUMENT",method="Attach"' in text
    assert 'criruntime_grpc_request_duration_seconds_bucket{le="0.001",method="Version"' in text


def test_metrics_off_by_default(shared_daemon: Daemon) -> None:
    assert "metrics on" not in shared_daemon.logs()

"""Config: embedded defaults, parsing, validation, and the rendered default file."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from criruntime import config
from tests.conftest import REPO


def test_missing_default_file_means_all_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    assert config.load(None) == config.Config()


def test_defaults() -> None:
    c = config.Config()
    assert c.socket == "/run/criruntime/criruntime.sock"
    assert c.root == "/var/lib/criruntime"
    assert c.state == "/run/criruntime"
    assert c.cgroup_driver == "cgroupfs"
    assert c.default_runtime == "auto"  # a start-up probe picks crun or runc
    assert set(c.runtimes) == {"runc", "crun"}
    assert c.cni.conf_dir == "/etc/cni/net.d"
    assert c.cni.bin_dirs == ["/opt/cni/bin"]
    assert c.metrics.address == ""  # off unless asked for


def test_rendered_default_parses_back_to_the_defaults() -> None:
    text = config.render_default()
    assert config.from_dict(tomllib.loads(text)) == config.Config()


def test_rendered_default_names_the_reserved_sections() -> None:
    text = config.render_default()
    for section in ("[cni]", "[registry]", "[streaming]", "[metrics]", "[runtimes.runc]"):
        assert section in text
    for key in ("conf_dir", "bin_dirs", "insecure", "default_runtime", "address", "path"):
        assert f"\n{key} = " in text
    assert '[registry.mirrors."registry.example.com"]' in text  # example, commented out


def test_cli_prints_default_config() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "criruntime", "config", "default"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    assert out == config.render_default()


def test_user_values_and_mirrors() -> None:
    c = config.from_dict(
        {
            "default_runtime": "kata",
            "runtimes": {"kata": {"path": "/usr/bin/kata-runtime"}},
            "registry": {
                "insecure": ["myreg:5000"],
                "mirrors": {"registry.k8s.io": {"endpoints": ["http://127.0.0.1:5000"]}},
            },
            "streaming": {"address": "[::1]:10010"},
        }
    )
    assert set(c.runtimes) == {"runc", "crun", "kata"}  # user handlers add to the built-ins
    assert c.registry.mirrors["registry.k8s.io"].endpoints == ["http://127.0.0.1:5000"]
    assert c.streaming.address == "[::1]:10010"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"log_format": 1}, "key 'log_format': must be a string, not integer"),
        ({"cni": []}, "key 'cni': must be a table"),
        ({"cni": {"bin_dirs": ["/ok", 3]}}, "key 'cni.bin_dirs[1]': must be a string"),
        ({"streaming": {"address": "127.0.0.1:99999"}}, "port in 0-65535"),
        ({"streaming": {"address": "example.com:80"}}, "must be an IP address"),
        ({"streaming": {"tls_cert_file": "/c.pem"}}, "tls_cert_file and tls_key_file"),
        (
            {"registry": {"mirrors": {"x": {"endpoint": []}}}},
            "unknown key 'registry.mirrors.\"x\".endpoint'",
        ),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(config.ConfigError, match=r"x\.toml") as err:
        config.from_dict(data, source="x.toml")
    assert message in str(err.value)


def test_load_reports_toml_syntax_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[cni\n")
    with pytest.raises(config.ConfigError, match=f"{path}: not valid TOML"):
        config.load(str(path))

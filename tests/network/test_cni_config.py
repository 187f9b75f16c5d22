"""Finding the CNI network config that NetworkReady depends on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from criruntime.network import cni_config


def _plugin(bin_dir: Path, name: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def _write(conf_dir: Path, name: str, conf: object) -> None:
    (conf_dir / name).write_text(json.dumps(conf) if not isinstance(conf, str) else conf)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    conf, bins = tmp_path / "net.d", tmp_path / "bin"
    conf.mkdir()
    bins.mkdir()
    return conf, bins


def test_lowest_named_valid_conflist_wins(dirs: tuple[Path, Path]) -> None:
    conf, bins = dirs
    _plugin(bins, "bridge")
    _write(
        conf, "20-b.conflist", {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]}
    )
    _write(
        conf, "10-a.conflist", {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]}
    )
    _write(conf, "05-notes.txt", "ignored: wrong extension")
    found = cni_config.load_default(str(conf), [str(bins)])
    assert (found.name, os.path.basename(found.path)) == ("a", "10-a.conflist")


def test_single_plugin_conf_is_wrapped(dirs: tuple[Path, Path]) -> None:
    conf, bins = dirs
    _plugin(bins, "bridge")
    _write(conf, "10.conf", {"cniVersion": "0.4.0", "name": "n", "type": "bridge", "bridge": "x"})
    found = cni_config.load_default(str(conf), [str(bins)])
    assert found.plugins == [{"cniVersion": "0.4.0", "name": "n", "type": "bridge", "bridge": "x"}]


def test_invalid_and_incomplete_configs_are_skipped_with_reasons(dirs: tuple[Path, Path]) -> None:
    conf, bins = dirs
    _write(conf, "01-garbage.conflist", "{not json")
    _write(conf, "02-noname.conflist", {"plugins": [{"type": "x"}]})
    _write(conf, "03-missing.conflist", {"name": "m", "plugins": [{"type": "absent"}]})
    with pytest.raises(cni_config.NoNetworkConfig) as err:
        cni_config.load_default(str(conf), [str(bins)])
    message = str(err.value)
    assert "01-garbage.conflist" in message
    assert "missing 'name'" in message
    assert "absent not found" in message


def test_missing_conf_dir_is_not_ready(tmp_path: Path) -> None:
    with pytest.raises(cni_config.NoNetworkConfig, match="no valid network config"):
        cni_config.load_default(str(tmp_path / "nope"), [])

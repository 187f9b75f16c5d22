"""A Localhost seccomp profile is a path the client names: only a bounded regular file is read."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from criruntime.container import seccomp_profile
from criruntime.container.seccomp_profile import read_profile
from criruntime.errors import InvalidArgument


def test_a_regular_profile_is_read(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "p.json")
    with open(path, "w") as f:
        json.dump({"defaultAction": "SCMP_ACT_ALLOW"}, f)
    assert read_profile(path) == {"defaultAction": "SCMP_ACT_ALLOW"}


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "fifo")
    os.mkfifo(path)
    started = time.monotonic()
    with pytest.raises(InvalidArgument, match="is not a regular file"):
        read_profile(path)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/proc/self", "/"])
def test_devices_and_directories_are_refused(path: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a regular file"):
        read_profile(path)


def test_a_huge_file_is_refused_unread(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "big.json")
    with open(path, "wb") as f:
        f.truncate(seccomp_profile.MAX_PROFILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(InvalidArgument, match="larger than"):
        read_profile(path)


def test_deep_nesting_is_invalid_argument(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "deep.json")
    with open(path, "w") as f:
        f.write("[" * 100_000 + "]" * 100_000)

    # In a thread, as the daemon reads it.
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(errors, path))
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], InvalidArgument)
    assert "nested too deeply" in str(errors[0])


def _catch(errors: list[BaseException], path: str) -> None:
    try:
        read_profile(path)
    except BaseException as e:  # the test asserts on what was raised
        errors.append(e)


def test_missing_relative_and_unreadable(tmp_path: str) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        read_profile(os.path.join(str(tmp_path), "nope.json"))
    with pytest.raises(InvalidArgument, match="must be absolute"):
        read_profile("relative.json")
    path = os.path.join(str(tmp_path), "bad.json")
    with open(path, "wb") as f:
        f.write(b"\xff\xfe{")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        read_profile(path)


def test_a_long_path_is_quoted_short() -> None:
    with pytest.raises(InvalidArgument) as e:
        read_profile("/" + "x" * 100_000)
    assert len(str(e.value)) < 300

"""read_regular_file: a path someone else chose is read only as a bounded regular file."""

from __future__ import annotations

import os
import time

import pytest

from criruntime.files import FileTooLarge, NotRegularFile, read_regular_file


def test_reads_a_regular_file(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "f")
    with open(path, "wb") as f:
        f.write(b"abc")
    assert read_regular_file(path, 3) == b"abc"
    with pytest.raises(FileTooLarge):
        read_regular_file(path, 2)


def test_refuses_what_would_block_or_never_end(tmp_path: str) -> None:
    fifo = os.path.join(str(tmp_path), "fifo")
    os.mkfifo(fifo)
    started = time.monotonic()
    for path in (fifo, "/dev/zero", "/dev/urandom", str(tmp_path)):
        with pytest.raises(NotRegularFile):
            read_regular_file(path, 1 << 20)
    assert time.monotonic() - started < 1
    with pytest.raises(FileNotFoundError):
        read_regular_file(os.path.join(str(tmp_path), "missing"), 10)

"""Child processes on the event loop: output, caps, stdin, exit statuses, kills, cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile

import pytest

from criruntime.child import Child


def _zombie_children() -> list[int]:
    """Our own children that have exited and were never waited for."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            found.append(int(entry))
    return found


def test_output_and_exit_code() -> None:
    async def main() -> tuple[int, bytes, bytes]:
        return await Child(["sh", "-c", "echo out; echo err >&2; exit 3"]).communicate()

    assert asyncio.run(main()) == (3, b"out\n", b"err\n")


def test_each_stream_is_capped_and_drained() -> None:
    # 1 MiB on each stream: far beyond a pipe's buffer, so an undrained pipe would hang.
    script = "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; exit 0"

    async def main() -> tuple[int, bytes, bytes]:
        return await asyncio.wait_for(Child(["sh", "-c", script]).communicate(cap=10), 20)

    code, out, err = asyncio.run(main())
    assert (code, out, err) == (0, b"\0" * 10, b"\0" * 10)


def test_stdin_is_delivered_whatever_its_size() -> None:
    data = os.urandom(300_000)  # more than a pipe holds: a memfd never blocks the writer

    async def main() -> tuple[int, bytes, bytes]:
        return await Child(["cat"], stdin=data).communicate()

    assert asyncio.run(main()) == (0, data, b"")


def test_killed_child_reports_the_signal() -> None:
    async def main() -> int:
        child = Child(["sleep", "30"], capture=False)
        child.kill(signal.SIGTERM)
        return await child.wait()

    assert asyncio.run(main()) == -signal.SIGTERM


def test_cancelled_communicate_kills_and_reaps_the_child() -> None:
    async def main() -> tuple[int, int | None]:
        child = Child(["sleep", "30"])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(child.communicate(), 0.2)
        for _ in range(100):  # reaped in the background
            if child.returncode is not None:
                break
            await asyncio.sleep(0.02)
        return child.pid, child.returncode

    pid, code = asyncio.run(main())
    assert code == -signal.SIGKILL
    assert pid not in _zombie_children()


def test_passed_fd_cwd_env_and_session() -> None:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    script = f'echo "$PWD $FOO" > /proc/self/fd/{write_fd}; cut -d" " -f6 /proc/$$/stat'
    try:
        with tempfile.TemporaryDirectory() as cwd:

            async def main() -> tuple[int, bytes, bytes]:
                child = Child(
                    ["sh", "-c", script],
                    pass_fds=(write_fd,),
                    env={"FOO": "bar", "PATH": os.environ["PATH"]},
                    cwd=cwd,
                    new_session=True,
                )
                result = await child.communicate()
                assert int(result[1]) == child.pid  # its own session leader
                return result

            code, _, err = asyncio.run(main())
            os.close(write_fd)
            write_fd = -1
            assert code == 0, err
            assert os.read(read_fd, 4096) == f"{cwd} bar\n".encode()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_fds_not_passed_stay_closed() -> None:
    read_fd, low = os.pipe()
    write_fd = 100  # inheritable, yet not passed: the child must not see it
    os.dup2(low, write_fd, inheritable=True)
    os.close(low)

    async def main() -> tuple[int, bytes, bytes]:
        return await Child(["ls", "/proc/self/fd"]).communicate()

    try:
        code, out, err = asyncio.run(main())
        assert code == 0, err
        assert str(write_fd) not in out.decode().split()
    finally:
        os.close(read_fd)
        os.close(write_fd)

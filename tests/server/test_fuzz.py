"""Fuzzing every CRI RPC through the real daemon, from the proto descriptors, with a seeded
generator (reproducible: CRIRUNTIME_FUZZ_SEED, default below) and a wall-clock budget.

Each RPC gets well-typed messages filled with hostile values (huge, control characters, unknown
enum numbers, paths to a FIFO and /dev/zero, CNI_ARGS separators, extreme numbers) and bodies
that do not decode. Asserted: no INTERNAL, no status carrying Python's exception text, every
call answered within a bound, Version still answers, the daemon's fds are back to where they
were and its threads within what its thread pools keep. Pods the fuzz managed to create are
removed through the API at the end.

Image references always point at 127.0.0.1:1 (nothing listens), so a pull never leaves the host.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from criruntime.api.runtime.v1 import api_pb2 as api
from tests.conftest import Daemon

SEED = int(os.environ.get("CRIRUNTIME_FUZZ_SEED", "15"))
BUDGET = float(os.environ.get("CRIRUNTIME_FUZZ_SECONDS", "20"))
CALL_BOUND = 10.0  # seconds any one call may take
STREAM_WINDOW = 0.5  # how long a server stream is read
MAX_DEPTH = 4
# Thread pools keep the workers they started (asyncio's default executor grows to this many
# under concurrent work and never shrinks): more threads than that is a leak.
EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)
# Words only Python's own errors use; a CRI status with them leaks an exception.
PYTHON_WORDS = (
    "Traceback", "Exception", "<class", "Error(", "KeyError", "TypeError", "ValueError",
    "AttributeError", "IndexError", "RecursionError", "UnicodeDecodeError", "DecodeError",
    "OverflowError", "AssertionError", "NoneType", "object has no attribute",
)  # fmt: skip

T = FieldDescriptor


class Fuzzer:
    def __init__(self, seed: int, fifo: str) -> None:
        self.r = random.Random(seed)
        self.strings = [
            "", "a", "x" * 64, "0" * 64, "../../etc/passwd", "/dev/zero", fifo,
            f"localhost/{fifo}", "runtime/default", "/", "x;IP=10.98.213.250", "a=b",
            "0-2000000", "1.2.3M", "9" * 400, "é" * 63, "\n", "tok\r\nX: 1", "\x7f", "\x00",
            "\u202e", "%", "_", "*", "-1", "ALL", "CAP_SYS_RESOURCE", "SYS_ADMIN",
            "kubernetes.io/ingress-bandwidth", "kubernetes.io/egress-bandwidth",
            "memory.high", "cgroup.procs", "net.ipv4.ip_forward", "SIGKILL",
        ]  # fmt: skip
        self.ints = [0, 1, -1, 7, 10, 500, 1234, 65536, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
        # Mild messages are plausible but for the odd hostile value, so the fuzz gets past the
        # first check of a verb and into the later ones.
        self.mild = False

    def string(self) -> str:
        if self.mild and self.r.random() < 0.99:
            alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
            return "".join(self.r.choice(alphabet) for _ in range(self.r.randint(1, 12)))
        roll = self.r.random()
        if roll < 0.6:
            return self.r.choice(self.strings)
        if roll < 0.8:
            return "".join(chr(self.r.randint(0, 0x2FF)) for _ in range(self.r.randint(1, 40)))
        if roll < 0.95:
            return self.r.choice("ab;=/\n.") * self.r.randint(100, 5000)
        return "n" * self.r.choice([200_000, 1 << 20])

    def integer(self, fd: FieldDescriptor) -> int:
        if self.mild and self.r.random() < 0.99:
            return self.r.randint(0, 100)
        value = self.r.choice(self.ints) if self.r.random() < 0.8 else self.r.randint(-99, 99999)
        if fd.type in (T.TYPE_UINT32, T.TYPE_FIXED32):
            return value % 2**32
        if fd.type in (T.TYPE_UINT64, T.TYPE_FIXED64):
            return value % 2**64
        if fd.type in (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32):
            return max(-(2**31), min(2**31 - 1, value))
        return value

    def scalar(self, fd: FieldDescriptor) -> Any:
        if fd.type == T.TYPE_STRING:
            return self.string()
        if fd.type == T.TYPE_BYTES:
            return self.r.randbytes(self.r.randint(0, 64))
        if fd.type == T.TYPE_BOOL:
            return self.r.random() < 0.5
        if fd.type in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
            return self.r.choice([0.0, -1.0, 1e300, float("nan")])
        if fd.enum_type is not None:
            known = [v.number for v in fd.enum_type.values]
            plausible = 0.98 if self.mild else 0.7
            return self.r.choice(known) if self.r.random() < plausible else self.r.choice([7, -1])
        return self.integer(fd)

    def fill(self, message: Message, depth: int = 0) -> Message:
        descriptor = message.DESCRIPTOR
        for fd in descriptor.fields:
            if self.r.random() < (0.1 if self.mild else 0.4):
                continue
            self._field(message, fd, depth)
        if descriptor.full_name == "runtime.v1.ImageSpec":
            spec: Any = message
            spec.image = "127.0.0.1:1/" + spec.image[:200]
        return message

    def _field(self, message: Message, fd: Any, depth: int) -> None:
        target = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            for _ in range(self.r.randint(0, 3)):
                key = self.scalar(key_fd)
                if value_fd.message_type is not None:
                    if depth < MAX_DEPTH:
                        self.fill(target[key], depth + 1)
                else:
                    target[key] = self.scalar(value_fd)
        elif fd.is_repeated:
            for _ in range(self.r.randint(0, 3)):
                if fd.message_type is not None:
                    if depth < MAX_DEPTH:
                        self.fill(target.add(), depth + 1)
                else:
                    target.append(self.scalar(fd))
        elif fd.message_type is not None:
            if depth < MAX_DEPTH:
                self.fill(target, depth + 1)
                if not target.ListFields():
                    target.SetInParent()
        else:
            setattr(message, fd.name, self.scalar(fd))

    def mutated_pod(self) -> Message:
        """A host-network pod that would run, with one field set to a hostile value: reaches
        the checks past the first one that a fully random message trips."""
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(
                name=f"fuzz-{self.r.randrange(10**9)}", namespace="fuzz", uid="fuzz"
            ),
            hostname="fuzz",
        )
        config.linux.security_context.namespace_options.network = api.NamespaceMode.NODE
        request = api.RunPodSandboxRequest(config=config)
        self.mild = False
        target: Message = request.config
        while True:
            fd: Any = self.r.choice(list(target.DESCRIPTOR.fields))
            child = getattr(target, fd.name)
            if fd.message_type is not None and not fd.is_repeated and self.r.random() < 0.6:
                target = child
                continue
            self._field(target, fd, MAX_DEPTH - 1)
            return request

    def body(self, method: MethodDescriptor) -> bytes:
        """A request body: mostly a hostile but well-formed message, else one that does not
        decode (random bytes, a message cut short, a field with the wrong wire type)."""
        cls = _message_class(method.input_type)
        if method.name == "RunPodSandbox" and self.r.random() < 0.5:
            return self.mutated_pod().SerializeToString()
        self.mild = self.r.random() < 0.4
        roll = self.r.random()
        if roll < 0.75:
            return self.fill(cls()).SerializeToString()
        valid = self.fill(cls()).SerializeToString()
        if roll < 0.85:
            return self.r.randbytes(self.r.randint(1, 64))
        if roll < 0.95 and len(valid) > 1:
            return valid[: self.r.randint(1, len(valid) - 1)]
        return b"\x0a\xff\xff\xff\xff\x0f" + valid  # a length past the end


def _message_class(descriptor: Descriptor) -> type[Message]:
    cls: type[Message] = getattr(api, descriptor.name)
    return cls


def _methods() -> list[MethodDescriptor]:
    return [
        m
        for service in api.DESCRIPTOR.services_by_name.values()
        for m in service.methods
        if not m.client_streaming
    ]


def _method(name: str) -> MethodDescriptor:
    return next(m for m in _methods() if m.name == name)


def _open_counts(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def _thread_names(pid: int) -> list[str]:
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as f:
            names.append(f.read().strip())
    return names


def _call(daemon: Daemon, method: MethodDescriptor, body: bytes) -> tuple[grpc.StatusCode, str]:
    assert daemon.channel is not None
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = daemon.channel.unary_stream(path, None, None)(body, timeout=STREAM_WINDOW)
            for _ in stream:
                pass
        else:
            daemon.channel.unary_unary(path, None, None)(body, timeout=CALL_BOUND)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def _remove_everything(daemon: Daemon) -> None:
    rt = daemon.runtime
    for c in rt.ListContainers(api.ListContainersRequest(), timeout=30).containers:
        rt.RemoveContainer(api.RemoveContainerRequest(container_id=c.id), timeout=60)
    for p in rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=30).items:
        rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=p.id), timeout=60)
        rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=p.id), timeout=60)


@pytest.fixture
def fuzz_daemon(daemon: Daemon) -> Iterator[Daemon]:
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            _remove_everything(daemon)


def test_fuzz_every_rpc(fuzz_daemon: Daemon, tmp_path: str) -> None:
    d = fuzz_daemon
    assert d.proc is not None
    fifo = os.path.join(str(tmp_path), "fifo")
    os.mkfifo(fifo)
    fuzzer = Fuzzer(SEED, fifo)
    methods = _methods()
    # One warm-up round: the executors' threads and the sqlite connections that stay open
    # are made here, so what follows must give back whatever it takes.
    for method in methods:
        _call(d, method, api.VersionRequest().SerializeToString())
    for _ in range(3):
        _call(d, _method("RunPodSandbox"), Fuzzer(0, fifo).mutated_pod().SerializeToString())
    _remove_everything(d)
    fds_before, threads_before = _open_counts(d.proc.pid)

    deadline = time.monotonic() + BUDGET
    calls, codes = 0, set()
    while time.monotonic() < deadline:
        for method in methods:
            body = fuzzer.body(method)
            started = time.monotonic()
            code, details = _call(d, method, body)
            elapsed = time.monotonic() - started
            where = f"{method.name} (seed {SEED}, call {calls}, body {body[:80]!r})"
            calls += 1
            codes.add(code)
            assert elapsed < CALL_BOUND, f"{where} took {elapsed:.1f}s"
            assert code != grpc.StatusCode.INTERNAL, f"{where}: {details[:500]}"
            if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                continue  # a stream still open when we stopped reading it
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{where}: {details[:500]}"
            leaked = [w for w in PYTHON_WORDS if w in details]
            assert not leaked, f"{where}: {code.name} {details[:500]}"
            assert len(details) <= 1024, f"{where}: {len(details)}-character status"
    assert calls > len(methods)
    assert grpc.StatusCode.INVALID_ARGUMENT in codes

    d.runtime.Version(api.VersionRequest(), timeout=5)
    _remove_everything(d)
    # Background work (reaps, deletions) settles; then the daemon holds what it held before.
    settle = time.monotonic() + 10
    while time.monotonic() < settle:
        fds, threads = _open_counts(d.proc.pid)
        if fds <= fds_before:
            break
        time.sleep(0.1)
    fds, threads = _open_counts(d.proc.pid)
    assert fds <= fds_before, f"fds {fds_before} -> {fds}"
    names = sorted(_thread_names(d.proc.pid))
    assert threads <= threads_before + EXECUTOR_THREADS, f"{threads_before} -> {names}"
    assert not d.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items

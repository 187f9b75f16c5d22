"""The one rule every request meets before any verb runs: each field of each request is within
bounds.

Walked from the proto descriptors, so a field added to the CRI is covered the day the proto is
updated:

- every string: no NUL byte (no CRI string can carry one to where it goes: argv, env, paths,
  cgroup files, C strings), and at most a byte length its kind allows;
- strings that reach a file name, a command line, a header or one line of a file (ids, paths,
  names, image references, registry credentials, ...): no control characters, and pod
  metadata, which goes into CNI_ARGS ("K=V;K=V", with no escaping), no ';' or '=';
- ids: the characters ids are made of, so they never meet a path or a LIKE pattern;
- every enum: one of the values the proto defines (proto3 decodes any number);
- every repeated field and map: a bounded number of entries.

What depends on the host or on other fields (a CPU that is not online, a port out of range, a
seccomp profile's content) stays with the verb, which checks it before its first side effect.
Messages name the field and quote at most a short prefix of what the client sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from criruntime.errors import InvalidArgument, quote

MAX_ITEMS = 10_000  # entries of one repeated field or map


@dataclass(frozen=True)
class Kind:
    """How one kind of string field is bounded."""

    max_bytes: int
    line: bool = True  # no control characters
    forbidden: str = ""  # characters refused besides those
    pattern: re.Pattern[str] | None = None
    what: str = ""  # the pattern, said for a person


# Free text a process gets as it is (argv, env values, annotations): large but bounded.
TEXT = Kind(max_bytes=1 << 20, line=False)
# Anything else: paths (PATH_MAX), references, options; one line each.
LINE = Kind(max_bytes=4096)
ID = Kind(
    max_bytes=128,
    pattern=re.compile(r"[A-Za-z0-9_.-]*"),
    what="letters, digits, '.', '_' and '-'",
)
# Kubernetes object names are at most 253 bytes (DNS subdomains); these also reach CNI_ARGS.
POD_NAME = Kind(max_bytes=253, forbidden=";=")
NAME = Kind(max_bytes=253)
HOSTNAME = Kind(max_bytes=64)  # the kernel's HOST_NAME_MAX
LABEL_KEY = Kind(max_bytes=317)  # a 253-byte prefix, '/', a 63-byte name
LABEL_VALUE = Kind(max_bytes=64 << 10, line=False)
CREDENTIAL = Kind(max_bytes=64 << 10)  # registry tokens go into HTTP headers

_MAP_KEYS = {
    "LabelsEntry": LABEL_KEY,
    "AnnotationsEntry": LABEL_KEY,
    "LabelSelectorEntry": LABEL_KEY,
}
_MAP_VALUES = {
    "LabelsEntry": LABEL_VALUE,
    "AnnotationsEntry": TEXT,
    "LabelSelectorEntry": LABEL_VALUE,
}
_BY_NAME = {  # fields of this name, in any message
    "container_id": ID,
    "pod_sandbox_id": ID,
    "target_id": ID,
}
_BY_FULL_NAME = {
    "runtime.v1.ContainerFilter.id": ID,
    "runtime.v1.PodSandboxFilter.id": ID,
    "runtime.v1.ContainerStatsFilter.id": ID,
    "runtime.v1.PodSandboxStatsFilter.id": ID,
    "runtime.v1.PodSandboxMetadata.name": POD_NAME,
    "runtime.v1.PodSandboxMetadata.namespace": POD_NAME,
    "runtime.v1.PodSandboxMetadata.uid": POD_NAME,
    "runtime.v1.ContainerMetadata.name": NAME,
    "runtime.v1.PodSandboxConfig.hostname": HOSTNAME,
    "runtime.v1.ContainerConfig.command": TEXT,
    "runtime.v1.ContainerConfig.args": TEXT,
    "runtime.v1.ExecSyncRequest.cmd": TEXT,
    "runtime.v1.ExecRequest.cmd": TEXT,
    "runtime.v1.KeyValue.value": TEXT,
    "runtime.v1.AuthConfig.username": CREDENTIAL,
    "runtime.v1.AuthConfig.password": CREDENTIAL,
    "runtime.v1.AuthConfig.auth": CREDENTIAL,
    "runtime.v1.AuthConfig.identity_token": CREDENTIAL,
    "runtime.v1.AuthConfig.registry_token": CREDENTIAL,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def kind_of(fd: FieldDescriptor) -> Kind:
    parent = fd.containing_type
    if parent is not None and parent.GetOptions().map_entry:
        table = _MAP_KEYS if fd.name == "key" else _MAP_VALUES
        return table.get(parent.name, LINE if fd.name == "key" else TEXT)
    return _BY_FULL_NAME.get(fd.full_name) or _BY_NAME.get(fd.name) or LINE


def validate(message: Message) -> None:
    """Raises InvalidArgument naming the first field out of bounds."""
    _message(message, "")


def _message(message: Message, prefix: str) -> None:
    for fd, value in message.ListFields():
        name = prefix + fd.name
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            if len(value) > MAX_ITEMS:
                raise InvalidArgument(f"{name} has more than {MAX_ITEMS} entries")
            key_fd, value_fd = _entry_fields(fd.message_type)
            for key, item in value.items():
                where = f"{name}[{quote(str(key))}]"
                _value(key_fd, key, where + " (the key)")
                _value(value_fd, item, where)
        elif fd.is_repeated:
            if len(value) > MAX_ITEMS:
                raise InvalidArgument(f"{name} has more than {MAX_ITEMS} entries")
            for i, item in enumerate(value):
                _value(fd, item, f"{name}[{i}]")
        else:
            _value(fd, value, name)


def _entry_fields(entry: Descriptor) -> tuple[FieldDescriptor, FieldDescriptor]:
    return entry.fields_by_name["key"], entry.fields_by_name["value"]


def _value(fd: FieldDescriptor, value: object, where: str) -> None:
    if isinstance(value, Message):
        _message(value, where + ".")
    elif isinstance(value, str):
        _string(kind_of(fd), value, where)
    elif isinstance(value, bytes):
        if len(value) > TEXT.max_bytes:
            raise InvalidArgument(f"{where} is longer than {TEXT.max_bytes} bytes")
    elif (
        fd.enum_type is not None
        and isinstance(value, int)
        and value not in fd.enum_type.values_by_number
    ):
        known = ", ".join(v.name for v in fd.enum_type.values)
        raise InvalidArgument(f"{where} is {value}, not a {fd.enum_type.name} ({_shorten(known)})")


def _string(kind: Kind, value: str, where: str) -> None:
    if "\0" in value:
        raise InvalidArgument(f"{where} contains a NUL byte")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > kind.max_bytes:
        raise InvalidArgument(
            f"{where} is {size} bytes long, more than the {kind.max_bytes} it may have"
        )
    if kind.line and _CONTROL.search(value):
        raise InvalidArgument(f"{where} {quote(value)} contains a control character")
    bad = next((c for c in value if c in kind.forbidden), None)
    if bad is not None:
        raise InvalidArgument(f"{where} {quote(value)} must not contain {bad!r}")
    if kind.pattern is not None and not kind.pattern.fullmatch(value):
        raise InvalidArgument(f"{where} {quote(value)} may only hold {kind.what}")


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"

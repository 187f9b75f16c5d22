"""Strings with NUL bytes are refused at the door, for every RPC.

No CRI string can carry one to where it goes (argv, env, paths, cgroup files, labels that end up
in C strings), and the component that would trip over it (runc, the kernel, conmon) says so late
and obscurely, after things were created. Refusing here names the field.
"""

from __future__ import annotations

from google.protobuf.message import Message


def nul_field(message: Message, prefix: str = "") -> str | None:
    """The dotted path of the first string field holding a NUL byte, or None."""
    for fd, value in message.ListFields():
        name = prefix + fd.name
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            for key, item in value.items():
                where = f"{name}[{key!r}]"
                if isinstance(key, str) and "\0" in key:
                    return where
                found = _check(item, where)
                if found:
                    return found
        elif fd.is_repeated:
            for i, item in enumerate(value):
                found = _check(item, f"{name}[{i}]")
                if found:
                    return found
        else:
            found = _check(value, name)
            if found:
                return found
    return None


def _check(value: object, where: str) -> str | None:
    if isinstance(value, str):
        return where if "\0" in value else None
    if isinstance(value, Message):
        return nul_field(value, where + ".")
    return None

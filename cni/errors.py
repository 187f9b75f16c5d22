"""CNI error codes and the error type every plugin raises.

Codes are the spec's well-known ones (CNI SPEC "Well-known error codes");
100+ are ours. The JSON form is what an executable plugin prints on stdout.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    INVALID_NETNS = 8
    TRY_AGAIN_LATER = 11
    # Plugin-specific (100+ are free for plugins per the spec).
    HOST_PORT_IN_USE = 100
    # libcni's ErrInternal: what the reference skel wraps plain errors in.
    INTERNAL = 999


class CNIError(Exception):
    """An error with a CNI code; `to_json()` is the spec's error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}; {details}" if details else msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str = "1.0.0") -> dict[str, Any]:
        return {
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, obj: Any, fallback: str = "") -> CNIError:
        """Rebuild an error printed by another (executable) plugin."""
        if isinstance(obj, dict) and isinstance(obj.get("code"), int):
            return cls(int(obj["code"]), str(obj.get("msg", "")), str(obj.get("details", "") or ""))
        return cls(ErrorCode.INTERNAL, fallback or "plugin failed without a valid error object")

    def __repr__(self) -> str:
        return f"CNIError(code={self.code}, msg={self.msg!r}, details={self.details!r})"

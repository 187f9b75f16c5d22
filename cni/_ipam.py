"""IPAM delegation for main plugins (SPEC "Delegated plugins").

Our own host-local runs in-process (no exec, no second Python start-up);
any other ipam.type is exec'd from CNI_PATH with the same config and CNI_*
variables, as the reference plugins' ipam.ExecAdd/ExecDel/ExecCheck do.
"""

from __future__ import annotations

from dataclasses import replace

from cni._exec import exec_plugin
from cni._skel import CmdArgs
from cni._types import Result
from cni.errors import CNIError, ErrorCode

IN_PROCESS_TYPES = frozenset({"criruntime-host-local"})


def ipam_type(args: CmdArgs) -> str:
    ipam = args.netconf.get("ipam")
    if ipam is None:
        return ""
    if not isinstance(ipam, dict):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "ipam must be an object")
    t = ipam.get("type") or ""
    if not isinstance(t, str):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "ipam.type must be a string")
    return t


def _run(args: CmdArgs, command: str) -> Result | None:
    t = ipam_type(args)
    if t in IN_PROCESS_TYPES:
        from cni import host_local

        sub = replace(args, command=command)
        if command == "ADD":
            return host_local.cmd_add(sub)
        if command == "DEL":
            host_local.cmd_del(sub)
        else:
            host_local.cmd_check(sub)
        return None
    out = exec_plugin(t, args.netconf, args.env_for(command))
    if command != "ADD":
        return None
    if out is None:
        raise CNIError(ErrorCode.DECODING_FAILURE, f"IPAM plugin {t} returned no result")
    return Result.from_json(out)


def ipam_add(args: CmdArgs) -> Result:
    result = _run(args, "ADD")
    assert result is not None
    return result


def ipam_del(args: CmdArgs) -> None:
    _run(args, "DEL")


def ipam_check(args: CmdArgs) -> None:
    _run(args, "CHECK")

"""criruntime's own CNI plugins (CNI SPEC 1.0.0; 0.3.0 to 0.4.0 configs accepted).

Executables (console scripts) — interchangeable with the reference plugins
in any conflist:

    criruntime-bridge, criruntime-host-local, criruntime-portmap, criruntime-loopback

In-process, with exactly the executables' semantics (the daemon's fast path;
no exec, no interpreter start-up):

    from cni import invoke, CNIError
    result = invoke("criruntime-bridge", "ADD", netconf,
                    {"CNI_CONTAINERID": cid, "CNI_NETNS": path, "CNI_IFNAME": "eth0",
                     "CNI_PATH": "/opt/cni/bin"})

Importing this package is cheap: plugin modules, pyroute2 and ctypes load
only when a plugin first runs.
"""

from cni._skel import PLUGIN_MODULES, invoke, is_builtin, version_info
from cni._types import SUPPORTED_VERSIONS
from cni.errors import CNIError, ErrorCode

BUILTIN_TYPES: tuple[str, ...] = tuple(PLUGIN_MODULES)

__all__ = [
    "BUILTIN_TYPES",
    "SUPPORTED_VERSIONS",
    "CNIError",
    "ErrorCode",
    "invoke",
    "is_builtin",
    "version_info",
]

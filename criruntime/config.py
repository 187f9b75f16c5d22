"""The daemon's one Config object: embedded defaults, TOML parsing, validation.

Every key is optional. An unknown key or a bad value stops start-up with the file, the dotted key
and the reason, because a silently ignored typo in a runtime config is worse than a refusal.
The dataclasses below are the single source of truth: `criruntime config default` renders them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PATH = "/etc/criruntime/config.toml"

Validator = Callable[[Any], None]


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, key and reason."""


def _opt(default: Any, doc: str, validate: Validator | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "validate": validate})


def _opt_factory(factory: Callable[[], Any], doc: str, validate: Validator | None = None) -> Any:
    return field(default_factory=factory, metadata={"doc": doc, "validate": validate})


def _one_of(*allowed: str) -> Validator:
    def check(value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(repr, allowed))}, not {value!r}")

    return check


def _at_least(minimum: int) -> Validator:
    def check(value: Any) -> None:
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, not {value}")

    return check


def _absolute_path(value: Any) -> None:
    if not os.path.isabs(value):
        raise ValueError(f"must be an absolute path, not {value!r}")


def _absolute_paths(value: Any) -> None:
    for item in value:
        _absolute_path(item)


def _host_port(value: Any, *, allow_empty: bool) -> None:
    if value == "" and allow_empty:
        return
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT with a port in 0-65535, not {value!r}")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"host in {value!r} must be an IP address") from None


def _listen_address(value: Any) -> None:
    _host_port(value, allow_empty=False)


def _optional_listen_address(value: Any) -> None:
    _host_port(value, allow_empty=True)


def _endpoints(value: Any) -> None:
    for item in value:
        if not str(item).startswith(("http://", "https://")):
            raise ValueError(f"endpoint {item!r} must start with http:// or https://")


@dataclass(frozen=True)
class RuntimeHandlerConfig:
    path: str = _opt("runc", "OCI runtime binary: a name looked up in PATH, or an absolute path.")


@dataclass(frozen=True)
class CniConfig:
    conf_dir: str = _opt(
        "/etc/cni/net.d",
        "Directory of CNI network configs; the lowest-named one is used.",
        _absolute_path,
    )
    bin_dirs: list[str] = _opt_factory(
        lambda: ["/opt/cni/bin"],
        "Directories searched for CNI plugin executables.",
        _absolute_paths,
    )


@dataclass(frozen=True)
class RegistryMirrorConfig:
    endpoints: list[str] = _opt_factory(
        list, "Mirror base URLs tried in order before the registry itself.", _endpoints
    )


@dataclass(frozen=True)
class RegistryConfig:
    insecure: list[str] = _opt_factory(
        list,
        "Registry hosts (HOST or HOST:PORT) tried over HTTPS, then plain HTTP if they do not "
        "speak TLS. localhost and 127.0.0.1 always are.",
    )
    mirrors: dict[str, RegistryMirrorConfig] = _opt_factory(
        dict, 'Per-registry mirrors: [registry.mirrors."HOST"] endpoints = ["http://..."].'
    )
    certs_dir: str = _opt(
        "/etc/criruntime/certs.d",
        "Per-registry TLS: <dir>/HOST[:PORT]/*.crt are CAs, *.cert + *.key a client cert.",
        _absolute_path,
    )
    max_concurrent_downloads: int = _opt(3, "Layers downloaded in parallel per pull.", _at_least(1))
    no_progress_timeout: int = _opt(
        60,
        "Seconds a download may make no progress before it is retried, then failed.",
        _at_least(1),
    )


@dataclass(frozen=True)
class StreamingConfig:
    address: str = _opt(
        "127.0.0.1:0",
        "Listen address of the Exec/Attach/PortForward server (port 0: any free port).",
        _listen_address,
    )
    tls_cert_file: str = _opt(
        "", "PEM certificate for HTTPS streaming URLs (with tls_key_file); empty: plain HTTP."
    )
    tls_key_file: str = _opt("", "PEM private key of tls_cert_file.")


@dataclass(frozen=True)
class CgroupsConfig:
    tolerate_missing_hugetlb_controller: bool = _opt(
        True,
        "Drop hugepage limits (with a warning) where the host has no usable hugetlb controller, "
        "as kubelet sends them for every page size; false refuses them with INVALID_ARGUMENT.",
    )


@dataclass(frozen=True)
class MetricsConfig:
    address: str = _opt(
        "",
        'Prometheus endpoint, e.g. "127.0.0.1:9090"; empty turns it off.',
        _optional_listen_address,
    )


# default_runtime's value that lets a start-up probe choose (criruntime/oci/selection.py).
AUTO_RUNTIME = "auto"


def _default_runtimes() -> dict[str, RuntimeHandlerConfig]:
    return {"runc": RuntimeHandlerConfig("runc"), "crun": RuntimeHandlerConfig("crun")}


@dataclass(frozen=True)
class Config:
    socket: str = _opt(
        "/run/criruntime/criruntime.sock",
        "Unix socket the CRI gRPC API listens on.",
        _absolute_path,
    )
    root: str = _opt(
        "/var/lib/criruntime", "Persistent state: metadata db, images, layers.", _absolute_path
    )
    state: str = _opt(
        "/run/criruntime", "Volatile state: pinned namespaces, bundles, locks.", _absolute_path
    )
    log_level: str = _opt(
        "info", "debug, info, warning or error.", _one_of(*["debug", "info", "warning", "error"])
    )
    log_format: str = _opt("text", "text or json.", _one_of("text", "json"))
    cgroup_driver: str = _opt(
        "cgroupfs", "cgroupfs, or systemd where systemd runs.", _one_of("cgroupfs", "systemd")
    )
    default_runtime: str = _opt(
        AUTO_RUNTIME,
        'Runtime handler used when a pod names none. "auto": crun when a start-up probe shows '
        "it can run containers on this host, else runc.",
    )
    runtimes: dict[str, RuntimeHandlerConfig] = _opt_factory(
        _default_runtimes, "Runtime handlers by name; runc and crun are always defined."
    )
    cgroups: CgroupsConfig = _opt_factory(CgroupsConfig, "Cgroup limits the host cannot enforce.")
    cni: CniConfig = _opt_factory(CniConfig, "CNI networking.")
    registry: RegistryConfig = _opt_factory(RegistryConfig, "Image registries.")
    streaming: StreamingConfig = _opt_factory(StreamingConfig, "Streaming server.")
    metrics: MetricsConfig = _opt_factory(MetricsConfig, "Prometheus metrics.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- loading -----------------------------------------------------------------------------------


def load(path: str | None) -> Config:
    """Loads the config at `path`. A missing default path means all defaults; a missing
    explicit path is an error."""
    explicit = path is not None
    path = path or DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such file") from None
        return Config()
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return from_dict(data, source=path)


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    config: Config = _build(Config, data, source, prefix="")
    merged = {**_default_runtimes(), **config.runtimes}
    config = dataclasses.replace(config, runtimes=merged)
    if bool(config.streaming.tls_cert_file) != bool(config.streaming.tls_key_file):
        raise ConfigError(
            f"{source}: key 'streaming': tls_cert_file and tls_key_file must be set together"
        )
    if AUTO_RUNTIME in config.runtimes:
        raise ConfigError(f"{source}: key 'runtimes': {AUTO_RUNTIME!r} is not a handler name")
    if config.default_runtime not in (*config.runtimes, AUTO_RUNTIME):
        raise ConfigError(
            f"{source}: key 'default_runtime': runtime {config.default_runtime!r} is not defined "
            f"(defined: {', '.join(sorted(config.runtimes))})"
        )
    return config


def _build(cls: type[Any], data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: key '{prefix.rstrip('.')}': must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, raw in data.items():
        dotted = prefix + key
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{dotted}'")
        value = _convert(hints[key], raw, source, dotted)
        validate = fields[key].metadata.get("validate")
        if validate is not None:
            try:
                validate(value)
            except ValueError as e:
                raise ConfigError(f"{source}: key '{dotted}': {e}") from None
        kwargs[key] = value
    return cls(**kwargs)


def _convert(hint: Any, raw: Any, source: str, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), raw, source, dotted + ".")
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: key '{dotted}': must be a table")
        return {k: _convert(value_type, v, source, f'{dotted}."{k}"') for k, v in raw.items()}
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(raw, list):
            raise ConfigError(f"{source}: key '{dotted}': must be an array")
        return [_convert(item_type, v, source, f"{dotted}[{i}]") for i, v in enumerate(raw)]
    if isinstance(hint, type) and not isinstance(hint, types.GenericAlias):
        # bool is a subclass of int in Python; TOML keeps them apart, so do we.
        if not isinstance(raw, hint) or (hint is int and isinstance(raw, bool)):
            raise ConfigError(
                f"{source}: key '{dotted}': must be a {_toml_type(hint)}, "
                f"not {_toml_type(type(raw))}"
            )
        return raw
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in this module, not in the file


def _toml_type(t: type) -> str:
    return {str: "string", int: "integer", bool: "boolean", float: "float", list: "array"}.get(
        t, "table" if t is dict else t.__name__
    )


# ---- rendering ---------------------------------------------------------------------------------


def render_default() -> str:
    """The full default config as commented TOML (what `criruntime config default` prints)."""
    lines = ["# criruntime configuration. Every key is optional; shown here with its default.", ""]
    _render(Config(), "", lines)
    return "\n".join(lines).rstrip() + "\n"


def _render(obj: Any, table: str, lines: list[str]) -> None:
    hints = typing.get_type_hints(type(obj))
    nested: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(hints[f.name]) or typing.get_origin(hints[f.name]) is dict:
            nested.append((f.name, value, doc))
            continue
        lines.append(f"# {doc}")
        lines.append(f"{f.name} = {_toml_value(value)}")
    for name, value, doc in nested:
        qualified = f"{table}.{name}" if table else name
        if isinstance(value, dict):
            lines += ["", f"# {doc}"]
            if not value:
                lines.append(f'# [{qualified}."registry.example.com"]')
            for key, item in value.items():
                lines.append(f"[{qualified}.{_toml_key(key)}]")
                _render(item, f"{qualified}.{_toml_key(key)}", lines)
        else:
            lines += ["", f"# {doc}", f"[{qualified}]"]
            _render(value, qualified, lines)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)

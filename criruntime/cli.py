"""Command line: `criruntime serve`, `criruntime config default|check`, `criruntime images`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys

from criruntime import __version__, config
from criruntime.observability import logging as obs_logging
from criruntime.store.db import SchemaError

log = logging.getLogger("criruntime")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="criruntime", description="Kubernetes CRI v1 runtime")
    parser.add_argument("--version", action="version", version=f"criruntime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the CRI daemon in the foreground")
    serve.add_argument("--config", help=f"TOML config file (default {config.DEFAULT_PATH})")
    serve.add_argument("--socket", help="unix socket (default /run/criruntime/criruntime.sock)")
    serve.add_argument("--root", help="persistent state dir (default /var/lib/criruntime)")
    serve.add_argument("--state", help="volatile state dir (default /run/criruntime)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["text", "json"])

    cfg = commands.add_parser("config", help="inspect configuration")
    cfg_commands = cfg.add_subparsers(dest="config_command", required=True)
    cfg_commands.add_parser("default", help="print the full default config with comments")
    check = cfg_commands.add_parser("check", help="validate a config file")
    check.add_argument("--config", help=f"TOML config file (default {config.DEFAULT_PATH})")

    images = commands.add_parser("images", help="manage images offline (safe with the daemon up)")
    images.add_argument("--config", help=f"TOML config file (default {config.DEFAULT_PATH})")
    images.add_argument("--root", help="persistent state dir (default /var/lib/criruntime)")
    img_commands = images.add_subparsers(dest="images_command", required=True)
    imp = img_commands.add_parser("import", help="load an OCI layout or docker-archive tarball")
    imp.add_argument("file")
    img_commands.add_parser("ls", help="list images")
    return parser


def _load(args: argparse.Namespace) -> config.Config:
    loaded = config.load(args.config)
    # Flags beat the file: an operator's command line is the most specific intent.
    overrides = {
        key: os.path.abspath(value) if key in ("socket", "root", "state") else value
        for key in ("socket", "root", "state", "log_level", "log_format")
        if (value := getattr(args, key, None)) is not None
    }
    return dataclasses.replace(loaded, **overrides)


def _images(args: argparse.Namespace, cfg: config.Config) -> int:
    from criruntime.errors import CriError
    from criruntime.image import cli_commands

    if args.images_command == "ls":
        print(cli_commands.format_images(cli_commands.list_images(cfg)))
        return 0
    try:
        for image_id in cli_commands.import_image(cfg, os.path.abspath(args.file)):
            print(image_id)
    except (CriError, OSError) as e:
        print(f"criruntime: cannot import {args.file}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        if args.config_command == "default":
            sys.stdout.write(config.render_default())
            return 0
        try:
            config.load(args.config)
        except config.ConfigError as e:
            print(f"criruntime: {e}", file=sys.stderr)
            return 1
        print("config OK")
        return 0

    try:
        cfg = _load(args)
    except config.ConfigError as e:
        print(f"criruntime: invalid config: {e}", file=sys.stderr)
        return 1
    if args.command == "images":
        try:
            return _images(args, cfg)
        except SchemaError as e:
            print(f"criruntime: {e}", file=sys.stderr)
            return 1
    obs_logging.setup(cfg.log_level, cfg.log_format)
    from criruntime.server import daemon  # after logging is set up; pulls in grpc

    try:
        asyncio.run(daemon.serve(cfg))
    except (daemon.StartupError, daemon.LockHeld, SchemaError) as e:
        log.error("cannot start: %s", e)
        return 1
    return 0

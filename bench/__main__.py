"""python -m bench [NAME...]: runs the named benchmarks (all by default) and prints the ratios."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def _available() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name not in {"harness"} and not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names = argv or _available()
    unknown = set(names) - set(_available())
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(_available())}"
        )
        return 2
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(module.run(), flush=True)
    return 0


raise SystemExit(main(sys.argv[1:]))

"""Run the benchmarks: python -m bench [NAME ...] [--json PATH]."""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

import bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="entries to run (default: all)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "latest.json")
    args = parser.parse_args(argv)
    for mod in pkgutil.iter_modules(bench.__path__):
        if mod.name.startswith("bench_"):
            importlib.import_module(f"bench.{mod.name}")
    names = args.names or sorted(bench.REGISTRY)
    unknown = [n for n in names if n not in bench.REGISTRY]
    if unknown:
        print(f"unknown bench entries: {', '.join(unknown)}; known: {', '.join(sorted(bench.REGISTRY))}", file=sys.stderr)
        return 2
    results = {}
    print(f"{'entry':<28} {'metric':<34} {'value':>12}")
    for name in names:
        out = bench.REGISTRY[name]()
        results[name] = out
        for metric, value in out.items():
            print(f"{name:<28} {metric:<34} {value:>12.3f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.platform(),
                                     "results": results}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

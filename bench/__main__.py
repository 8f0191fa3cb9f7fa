"""Run the benchmarks: python -m bench [NAME ...] [--json PATH].

Each entry runs in its own Python process, so one entry's threads, torch settings, GL
contexts or windows cannot change another's numbers (or crash the run)."""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench


def _load_entries() -> None:
    for mod in pkgutil.iter_modules(bench.__path__):
        if mod.name.startswith("bench_"):
            importlib.import_module(f"bench.{mod.name}")


def _run_one(name: str, out: Path) -> int:
    """Child process: run one entry and write its numbers to out."""
    out.write_text(json.dumps(bench.REGISTRY[name]()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="entries to run (default: all)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "latest.json")
    parser.add_argument("--one", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _load_entries()
    if args.one:
        return _run_one(args.one, args.json)
    names = args.names or sorted(bench.REGISTRY)
    unknown = [n for n in names if n not in bench.REGISTRY]
    if unknown:
        print(f"unknown bench entries: {', '.join(unknown)}; known: {', '.join(sorted(bench.REGISTRY))}", file=sys.stderr)
        return 2
    results = {}
    print(f"{'entry':<28} {'metric':<34} {'value':>12}", flush=True)
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            proc = subprocess.run([sys.executable, "-m", "bench", "--one", name, "--json", str(out)],
                                  cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0 or not out.exists():
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"{name:<28} {'FAILED':<34} {'':>12}  ({last})", flush=True)
                results[name] = {"error": last}
                continue
            results[name] = json.loads(out.read_text())
        if not results[name]:  # an entry that cannot run here says why on stderr
            reason = (proc.stderr.strip().splitlines() or ["no numbers"])[-1]
            print(f"{name:<28} {'skipped':<34} {'':>12}  ({reason})", flush=True)
        for metric, value in results[name].items():
            print(f"{name:<28} {metric:<34} {value:>12.3f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.platform(),
                                     "results": results}, indent=2))
    print(f"wrote {args.json}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

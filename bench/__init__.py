"""Benchmarks: `python -m bench [NAME ...]` prints a table and writes bench/results/latest.json.

An entry is a function in a bench/bench_*.py module decorated with @entry; it returns a dict of
named numbers (milliseconds, frames per second, ...) whose keys carry their unit as a suffix."""
from __future__ import annotations

import time
from typing import Callable

REGISTRY: dict[str, Callable[[], dict[str, float]]] = {}


def entry(name: str):
    def wrap(fn):
        REGISTRY[name] = fn
        return fn
    return wrap


def time_ms(fn: Callable[[], object], repeat: int = 20, warmup: int = 3) -> float:
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]

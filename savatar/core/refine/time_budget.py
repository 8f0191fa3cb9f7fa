"""A wall-clock budget for a refinement run (`savatar build --video`, `savatar refine --minutes`).

The Refiner's schedule (the mean's learning rate decays over config.iterations) is planned in
iterations, a budget in seconds. TimeBudget, installed as a Refiner pre-step hook, measures the
rate as the run goes and keeps config.iterations at the iteration the deadline will be reached,
so the schedule ends where the time does; once the deadline has passed, the step being taken is
the last one (the run then ends as a finished run, not a stopped one).
"""
from __future__ import annotations

import time
from typing import Callable

WARMUP_STEPS = 2  # the first steps compile and warm caches: their pace says nothing about the rest


class TimeBudget:
    """Pre-step hook (Refiner.pre_step_hooks) ending the run at deadline (a clock() value).
    max_iterations caps the run as config.iterations would without a budget (None: no cap)."""

    def __init__(self, deadline: float, max_iterations: int | None = None,
                 clock: Callable[[], float] = time.monotonic, warmup: int = WARMUP_STEPS):
        self.deadline, self.max_iterations, self.clock, self.warmup = deadline, max_iterations, clock, warmup
        self._start: tuple[int, float] | None = None  # (iteration, time) once warmed up
        self._seen = 0
        self.expired = False

    def planned(self, iteration: int, now: float) -> int | None:
        """Iteration count the run will reach by the deadline at the pace measured so far (None
        until the pace is known), at least iteration + 1."""
        if self._start is None:
            return None
        it0, t0 = self._start
        if iteration <= it0 or now <= t0:
            return None
        rate = (iteration - it0) / (now - t0)
        return iteration + 1 + int(rate * max(self.deadline - now, 0.0))

    def __call__(self, refiner) -> None:
        now, it = self.clock(), refiner.iteration
        cfg = refiner.config
        self._seen += 1
        if self._seen == self.warmup + 1:
            self._start = (it, now)
        if now >= self.deadline:
            self.expired = True
            target = it + 1
        else:
            target = self.planned(it, now)
            if target is None:  # pace not known yet: only make sure the run goes on to measure it
                target = max(cfg.iterations, it + 2)
        if self.max_iterations is not None:
            target = min(target, self.max_iterations)
        cfg.iterations = max(target, it + 1)

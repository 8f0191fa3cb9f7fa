"""Refinement speed: iterations per second at 256x256 with the 30K-Gaussian default avatar on the
CPU rasterizer, and the projected wall time of the default 10K-iteration schedule."""
from __future__ import annotations

import time

import numpy as np

from bench import entry
from savatar.core.binding import default_avatar
from savatar.core.camera import orbit_camera
from savatar.core.frame_sources import frames_from_motion
from savatar.core.refine import Refiner, RefineConfig
from savatar.core.rig import Rig

SIZE = 256
WARMUP = 2
ITERATIONS = 5


@entry("refine")
def bench_refine() -> dict[str, float]:
    avatar = default_avatar()
    rig = Rig.of(avatar)
    e = len(avatar.default_expr)
    rng = np.random.default_rng(0)
    expr = rng.normal(0, 0.3, (3, e)).astype(np.float32)
    cams = [orbit_camera(yaw, 0, 0.75, (0.0, -0.05, -0.03), SIZE, SIZE) for yaw in (-25, 0, 25)]
    frames = frames_from_motion(rig, expr, np.zeros((3, 15), np.float32), np.zeros((3, 3), np.float32), cams)
    cfg = RefineConfig(iterations=10000, backend="cpu", report_every=10 ** 9)
    r = Refiner(avatar, rig, frames, cfg)
    for _ in range(WARMUP):
        r.step()
    t0 = time.perf_counter()
    for _ in range(ITERATIONS):
        r.step()
    per = (time.perf_counter() - t0) / ITERATIONS
    return {"iterations_per_s": 1.0 / per, "step_ms": per * 1e3, "projected_10k_min": per * 10000 / 60}

"""Refinement speed: iterations per second with the 30K-Gaussian default avatar, and the projected
wall time of the default 10K-iteration schedule; at 256x256 on the CPU rasterizer (also with its
PyTorch reference compositor, keys suffixed _torch_compositor, for before/after in one run), and
at 512x512 with gsplat when a CUDA GPU is present (keys prefixed cuda_512_)."""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from bench import entry
from savatar.core.build.default_avatar import default_avatar
from savatar.core.gaussians.rig import Rig
from savatar.core.refine.frame_sources import frames_from_motion
from savatar.core.refine.refine import Refiner, RefineConfig
from savatar.core.render.camera import orbit_camera
from savatar.core.render.rasterize_cpu import COMPOSITOR_ENV

WARMUP = 2
ITERATIONS = 5


def _seconds_per_iteration(size: int, backend: str, iterations: int = ITERATIONS) -> float:
    avatar = default_avatar()
    rig = Rig.of(avatar)
    e = len(avatar.default_expr)
    rng = np.random.default_rng(0)
    expr = rng.normal(0, 0.3, (3, e)).astype(np.float32)
    cams = [orbit_camera(yaw, 0, 0.75, (0.0, -0.05, -0.03), size, size) for yaw in (-25, 0, 25)]
    frames = frames_from_motion(rig, expr, np.zeros((3, 15), np.float32), np.zeros((3, 3), np.float32), cams,
                                backend=backend)
    r = Refiner(avatar, rig, frames, RefineConfig(iterations=10000, backend=backend, report_every=10 ** 9))
    for _ in range(WARMUP):
        r.step()
    if backend == "gsplat":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iterations):
        r.step()
    if backend == "gsplat":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iterations


@entry("refine")
def bench_refine() -> dict[str, float]:
    per = _seconds_per_iteration(256, "cpu")
    out = {"iterations_per_s": 1.0 / per, "step_ms": per * 1e3, "projected_10k_min": per * 10000 / 60}
    os.environ[COMPOSITOR_ENV] = "torch"
    try:
        per = _seconds_per_iteration(256, "cpu")
    finally:
        del os.environ[COMPOSITOR_ENV]
    out.update({"iterations_per_s_torch_compositor": 1.0 / per, "step_ms_torch_compositor": per * 1e3})
    if torch.cuda.is_available():
        per = _seconds_per_iteration(512, "gsplat", iterations=50)
        out.update({"cuda_512_iterations_per_s": 1.0 / per, "cuda_512_projected_10k_min": per * 10000 / 60})
    return out

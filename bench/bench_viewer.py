"""The whole viewer loop (drive, deform, sort, draw, console): the default avatar on a 512x512 stage, and a 60K avatar built from a portrait on the default 720x720 stage."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from bench import entry
from bench.display import x_display


def _loop(avatar, size: tuple[int, int]) -> dict[str, float]:
    """Median frame time of the viewer loop on avatar, still and with a new pose and camera
    every frame, and the animated frames' per-stage times."""
    import torch

    torch.set_num_threads(1)  # as savatar-viewer does
    with x_display():
        os.environ.setdefault("SAVATAR_CONFIG_DIR", tempfile.mkdtemp())
        from savatar.viewer.app import App

        app = App(avatar, None, size)
        app.log.echo = False
        out: dict[str, float] = {}
        try:
            for label, animate in (("still", False), ("animated", True)):
                times = []
                for i in range(40):
                    if animate:  # new parameters every frame: deform and sort each time
                        app.driving.set_pose(6, 0.2 * (1 + np.sin(i / 3)))
                        app.stage.orbit.yaw = 10.0 * np.sin(i / 5)
                    t0 = time.perf_counter()
                    app.stage.dispatch_events()
                    app.step(1 / 30)
                    times.append(time.perf_counter() - t0)
                ms = float(np.median(times[5:]) * 1e3)
                out[f"{label}_frame_ms"] = ms
                out[f"{label}_fps"] = 1000.0 / ms
            for stage, ms in app.timings.ms.items():
                out[f"animated_{stage}_ms"] = ms
        finally:
            app.running = False
            app.shutdown()
    return out


@entry("viewer_loop")
def viewer_loop() -> dict[str, float]:
    """The bundled default avatar (30K Gaussians) on a 512x512 stage."""
    from savatar.core.gaussians.binding import default_avatar

    return _loop(default_avatar(), (512, 512))


@entry("viewer_built")
def viewer_built() -> dict[str, float]:
    """What a user meets first: an avatar built from a portrait (60K Gaussians, the build's
    default) on the default 720x720 stage. "still" frames are loop turns that draw nothing."""
    import skimage.data

    from savatar.core.build.build import build_avatar

    avatar, _ = build_avatar([skimage.data.astronaut()])
    return {"gaussians_count": float(len(avatar)), **_loop(avatar, (720, 720))}


@entry("viewer_while_refining")
def viewer_while_refining() -> dict[str, float]:
    """The viewer loop while a refinement runs in its worker thread (same process): does torch
    in the worker starve the interface of the GIL? 256x256 training frames, default avatar."""
    import torch

    torch.set_num_threads(1)
    with x_display():
        os.environ.setdefault("SAVATAR_CONFIG_DIR", tempfile.mkdtemp())
        from savatar.core.gaussians.binding import default_avatar
        from savatar.core.gaussians.rig import Rig
        from savatar.core.refine.frame_sources import frames_from_motion
        from savatar.core.refine.refine import RefineConfig
        from savatar.core.render.camera import orbit_camera
        from savatar.viewer.app import App

        avatar = default_avatar()
        rig = Rig.of(avatar)
        e = rig.model.num_expr
        cams = [orbit_camera(y, 0, 0.7, (0, -0.03, -0.02), 256, 256) for y in (-20, 20)]
        frames = frames_from_motion(rig, np.zeros((2, e), np.float32), np.zeros((2, 15), np.float32),
                                    np.zeros((2, 3), np.float32), cams, backend="cpu")
        app = App(avatar, None, (512, 512))
        app.log.echo = False
        out: dict[str, float] = {}
        try:
            app.refining.run(frames, RefineConfig(iterations=10 ** 6, report_every=2, checkpoint_every=0, backend="cpu"))
            times = []
            t_end = time.perf_counter() + 20.0
            i = 0
            while time.perf_counter() < t_end:
                app.stage.orbit.yaw = 10.0 * np.sin(i / 5)  # keep the stage redrawing
                t0 = time.perf_counter()
                app.stage.dispatch_events()
                app.step(1 / 30)
                times.append(time.perf_counter() - t0)
                i += 1
            ms = float(np.median(times[5:]) * 1e3)
            out["frame_ms"] = ms
            out["fps"] = 1000.0 / ms
            refiner = app.refining.refiner
            out["refine_it_per_s"] = refiner.last_report.it_per_s if refiner and refiner.last_report else 0.0
        finally:
            app.refining.stop()
            app.running = False
            app.shutdown()
    return out

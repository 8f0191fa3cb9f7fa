"""The whole viewer loop (drive, deform, sort or raster, draw, console): the default avatar on a
512x512 stage with each stage backend (viewer_loop: gl; viewer_loop_cpu; viewer_loop_gsplat, on
a CUDA machine only), and a 60K avatar built from a portrait on the default 720x720 stage."""
from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

from bench import entry
from bench.display import x_display


def _app(avatar, size: tuple[int, int], stage_backend: str):
    """The viewer with stage_backend drawing (gsplat loads on a worker: waited for); raises if
    it fell back to another backend, so a number is never another backend's."""
    from savatar.viewer.app import App

    app = App(avatar, None, size, stage_backend=stage_backend)
    app.log.echo = False
    deadline = time.perf_counter() + 900.0  # gsplat's first use may compile its CUDA extension
    while app.jobs.busy and time.perf_counter() < deadline:
        app.stage.dispatch_events()
        app.step(1 / 30)
    app.step(1 / 30)
    if app.backend.name != stage_backend:
        errors = [e.text for e in app.log.entries() if e.level == "error"]
        app.running = False
        app.shutdown()
        raise RuntimeError(f"stage backend {stage_backend} did not start: {errors[-1] if errors else 'still loading'}")
    return app


def _loop(avatar, size: tuple[int, int], stage_backend: str = "gl") -> dict[str, float]:
    """Median frame time of the viewer loop on avatar, still and with a new pose and camera
    every frame, and the animated frames' per-stage times (gsplat's measured on its CUDA
    stream with events; "transfer" is the image's way into the window's texture)."""
    import torch

    torch.set_num_threads(1)  # as savatar-viewer does
    with x_display():
        os.environ.setdefault("SAVATAR_CONFIG_DIR", tempfile.mkdtemp())
        app = _app(avatar, size, stage_backend)
        out: dict[str, float] = {}
        if stage_backend == "gsplat":
            out["cuda_gl_interop_used"] = float(app.backend.transfer.label == "CUDA-GL interop")
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
                if stage != "sort" or stage_backend == "gl":  # image backends rasterize instead of sorting
                    out[f"animated_{stage}_ms"] = ms
        finally:
            app.running = False
            app.shutdown()
    return out


def _cuda_missing(name: str) -> bool:
    """True (and one line on stderr saying so) when there is no CUDA GPU for entry name."""
    import torch

    if torch.cuda.is_available():
        return False
    print(f"{name}: skipped, no CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
    return True


@entry("viewer_loop")
def viewer_loop() -> dict[str, float]:
    """The bundled default avatar (30K Gaussians) on a 512x512 stage, gl stage backend."""
    from savatar.core.build.default_avatar import default_avatar

    return _loop(default_avatar(), (512, 512), "gl")


@entry("viewer_loop_cpu")
def viewer_loop_cpu() -> dict[str, float]:
    """The same with the cpu stage backend (the CPU rasterizer, a quarter of the resolution
    while animated, the image to the window as a texture)."""
    from savatar.core.build.default_avatar import default_avatar

    return _loop(default_avatar(), (512, 512), "cpu")


@entry("viewer_loop_gsplat")
def viewer_loop_gsplat() -> dict[str, float]:
    """The same with the gsplat stage backend (deform and rasterize on the GPU); needs CUDA."""
    if _cuda_missing("viewer_loop_gsplat"):
        return {}
    from savatar.core.build.default_avatar import default_avatar

    return _loop(default_avatar(), (512, 512), "gsplat")


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
    return _while_refining("gl", "cpu")


@entry("viewer_while_refining_gsplat")
def viewer_while_refining_gsplat() -> dict[str, float]:
    """Both on the GPU: the gsplat stage on its own CUDA stream while gsplat refines on the
    refiner's (the default) stream; needs CUDA."""
    if _cuda_missing("viewer_while_refining_gsplat"):
        return {}
    return _while_refining("gsplat", "gsplat")


def _while_refining(stage_backend: str, refine_backend: str) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    with x_display():
        os.environ.setdefault("SAVATAR_CONFIG_DIR", tempfile.mkdtemp())
        from savatar.core.build.default_avatar import default_avatar
        from savatar.core.gaussians.rig import Rig
        from savatar.core.refine.frame_sources import frames_from_motion
        from savatar.core.refine.refine import RefineConfig
        from savatar.core.render.camera import orbit_camera

        avatar = default_avatar()
        rig = Rig.of(avatar)
        e = rig.model.num_expr
        cams = [orbit_camera(y, 0, 0.7, (0, -0.03, -0.02), 256, 256) for y in (-20, 20)]
        frames = frames_from_motion(rig, np.zeros((2, e), np.float32), np.zeros((2, 15), np.float32),
                                    np.zeros((2, 3), np.float32), cams, backend=refine_backend)
        app = _app(avatar, (512, 512), stage_backend)
        out: dict[str, float] = {}
        try:
            app.refining.run(frames, RefineConfig(iterations=10 ** 6, report_every=2, checkpoint_every=0,
                                                  backend=refine_backend))
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

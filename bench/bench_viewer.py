"""The whole viewer loop (drive, deform, sort, draw, console) with a 512x512 stage."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from bench import entry
from bench.display import x_display


@entry("viewer_loop")
def viewer_loop() -> dict[str, float]:
    import torch

    torch.set_num_threads(1)  # as savatar-viewer does
    with x_display():
        os.environ.setdefault("SAVATAR_CONFIG_DIR", tempfile.mkdtemp())
        from savatar.core.binding import default_avatar
        from savatar.viewer.app import App

        app = App(default_avatar(), None, (512, 512))
        app.log.echo = False
        out: dict[str, float] = {}
        try:
            for label, animate in (("still", False), ("animated", True)):
                times = []
                for i in range(40):
                    if animate:  # new parameters every frame: deform and sort each time
                        app.set_pose(6, 0.2 * (1 + np.sin(i / 3)))
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

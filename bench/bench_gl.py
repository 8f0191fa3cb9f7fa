"""OpenGL splatting of the default avatar at 512x512 (headless EGL, Mesa llvmpipe here)."""
from __future__ import annotations

import torch

from bench import entry, time_ms


@entry("gl_splat")
def gl_splat() -> dict[str, float]:
    from savatar.core.build.default_avatar import default_avatar
    from savatar.core.gaussians.rig import Rig
    from savatar.core.render.camera import orbit_camera
    from savatar.gl.splat_renderer import SplatRenderer

    rig = Rig.of(default_avatar())
    g = rig.world()
    renderer = SplatRenderer()
    cam = orbit_camera(20, 5, 0.7, (0, -0.03, -0.02), 512, 512)
    target = renderer.ctx.simple_framebuffer((512, 512))

    def draw_only() -> None:
        renderer.draw_to(target, cam)
        renderer.ctx.finish()

    def whole_frame() -> None:  # pose -> deform -> SH + sort + upload -> draw
        renderer.upload(rig.world(pose=torch.zeros(15)), cam, front_to_back=False)
        draw_only()

    renderer.upload(g, cam, front_to_back=False)
    draw_ms = time_ms(draw_only, repeat=15)
    upload_ms = time_ms(lambda: renderer.upload(g, cam, front_to_back=False), repeat=15)
    frame_ms = time_ms(whole_frame, repeat=15)
    return {"gaussians": float(len(g)), "draw_ms": draw_ms, "sort_upload_ms": upload_ms,
            "frame_ms": frame_ms, "frame_fps": 1000.0 / frame_ms}

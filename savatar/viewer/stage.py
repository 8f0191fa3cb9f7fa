"""The stage: a pyglet window with a moderngl context that draws the avatar (gl splatting, or
the image of a rasterizing stage backend as a texture: savatar.viewer.stage_backends), optional
mesh and Gaussian-centre overlays, and the HUD; it turns mouse, keys and file drops into calls
on the app."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import moderngl
import numpy as np
import pyglet
import torch

# pyglet's per-call glGetError checks cost time on every GL call and misreport errors left
# by the other (Dear PyGui) context; moderngl raises its own errors.
pyglet.options["debug_gl"] = False

from savatar.core.gaussians.gaussians import WorldGaussians
from savatar.core.render.camera import Camera
from savatar.gl.context import program
from savatar.gl.frame_texture import FrameTexture
from savatar.gl.mesh_renderer import MeshRenderer
from savatar.gl.splat_renderer import SplatImage, SplatRenderer
from savatar.viewer.glx_context import release_egl_context
from savatar.viewer.orbit import Orbit
from savatar.viewer.stage_backends import ImageBackend, spikes_in_red
from savatar.viewer.state import RenderSettings, StageTimings


@dataclass
class StageCallbacks:
    """What the stage asks of the app."""

    on_drop: Callable[[list[str]], None]
    on_key: Callable[[str], None]  # "reset", "frame", "play", "screenshot", "hud", "fullscreen", "quit"
    on_close: Callable[[], None]


class Stage:
    def __init__(self, size: tuple[int, int], callbacks: StageCallbacks, visible: bool = True,
                 position: tuple[int, int] | None = None):
        release_egl_context()
        config = pyglet.gl.Config(major_version=3, minor_version=3, forward_compatible=True, double_buffer=True,
                                  depth_size=24)
        self.window = pyglet.window.Window(*size, caption="SpatialAvatar — stage", resizable=True,
                                           config=config, visible=visible, file_drops=True, vsync=False)
        if position:
            self.window.set_location(*position)
        self.window.switch_to()  # another context (e.g. a headless one) may be current
        self.ctx = moderngl.create_context()
        self.splat = SplatRenderer(self.ctx)
        self.frame = FrameTexture(self.ctx)
        self.showing_image = False  # the last thing made to draw: an image backend's frame, not splats
        self._offscreen: SplatRenderer | None = None
        self.mesh: MeshRenderer | None = None
        self.occluder: MeshRenderer | None = None
        self._points_prog = program(self.ctx, "points.vert", "points.frag")
        self._points_vbo = self.ctx.buffer(reserve=12 * 1024, dynamic=True)
        self._points_vao = self.ctx.vertex_array(self._points_prog, [(self._points_vbo, "3f", "in_pos")])
        self.callbacks = callbacks
        self.orbit = Orbit()
        self.needs_redraw = True
        self.hud = pyglet.text.Label("", x=10, y=10, multiline=True, width=700, anchor_y="bottom",
                                     color=(30, 30, 30, 255), font_size=10)
        self.hud_text = ""
        self._install_handlers()

    # ------------------------------------------------------------------ input
    def _install_handlers(self) -> None:
        w = self.window
        keys = pyglet.window.key
        keymap = {keys.R: "reset", keys.F: "frame", keys.SPACE: "play", keys.S: "screenshot", keys.H: "hud",
                  keys.F11: "fullscreen", keys.ESCAPE: "quit"}

        @w.event
        def on_key_press(symbol, modifiers):
            if symbol in keymap:
                self.callbacks.on_key(keymap[symbol])
            return pyglet.event.EVENT_HANDLED  # keep pyglet's default Esc-closes-window out of the way

        @w.event
        def on_mouse_drag(x, y, dx, dy, buttons, modifiers):
            if buttons & pyglet.window.mouse.LEFT and not modifiers & pyglet.window.key.MOD_SHIFT:
                self.orbit.rotate(dx, -dy)
            elif buttons & (pyglet.window.mouse.MIDDLE | pyglet.window.mouse.RIGHT | pyglet.window.mouse.LEFT):
                self.orbit.pan(dx, -dy, self.window.height)

        @w.event
        def on_mouse_scroll(x, y, scroll_x, scroll_y):
            self.orbit.zoom(scroll_y)

        @w.event
        def on_file_drop(x, y, paths):
            self.callbacks.on_drop(list(paths))

        @w.event
        def on_resize(width, height):
            self.needs_redraw = True

        @w.event
        def on_expose():
            self.needs_redraw = True

        @w.event
        def on_close():
            self.callbacks.on_close()
            return pyglet.event.EVENT_HANDLED

    # ------------------------------------------------------------------ drawing
    def dispatch_events(self) -> None:
        # Event handlers may issue GL calls: make this window's context current first (the
        # console's context is current after each of its frames).
        self.window.switch_to()
        self.window.dispatch_events()

    def framebuffer_size(self) -> tuple[int, int]:
        return self.window.get_framebuffer_size()

    def camera(self) -> Camera:
        return self.orbit.camera(*self.framebuffer_size())

    def upload(self, g: WorldGaussians, camera: Camera, settings: RenderSettings, spikes: np.ndarray | None,
               visible: torch.Tensor | None = None) -> None:
        """Sort and upload on the main thread (GL); spikes (N,) bool paints flagged ones red;
        visible (N,) bool, when given, leaves the others out (savatar.core.gaussians.facing)."""
        # Every GL entry point makes this window's context current: the console's is current
        # after each of its frames, and a buffer written there would land in the wrong context.
        self.window.switch_to()
        if settings.highlight_spikes and spikes is not None and spikes.any():
            g = spikes_in_red(g, torch.as_tensor(spikes))
        if visible is not None:
            g = g.subset(visible)
        self.splat.upload(g, camera, min(settings.sh_degree, g.sh_degree), front_to_back=False,
                          scale_modifier=settings.scale_modifier)
        self.showing_image = False

    def show_image(self, backend: ImageBackend, pixels: torch.Tensor) -> None:
        """An image backend's frame (H, W, 4) uint8 into the stage's texture, the next draw's
        picture (stretched over the window when drawn at a lower resolution)."""
        self.window.switch_to()
        backend.present(pixels, self.frame)
        self.showing_image = True

    def draw(self, camera: Camera, settings: RenderSettings, mesh_verts: np.ndarray | None,
             centres: np.ndarray | None, timings: StageTimings, occluder_verts: np.ndarray | None = None,
             splat_camera: Camera | None = None) -> None:
        """occluder_verts (V, 3): the head mesh shrunk inside the avatar; splats behind it
        are skipped by the depth test (see SplatRenderer.draw_to). splat_camera: a lower
        resolution version of camera that the last upload was made for; the splats are then
        drawn at that resolution and stretched over the window. After show_image the picture
        is that frame's texture instead (its own resolution, stretched), under the overlays."""
        self.window.switch_to()
        fb = self.ctx.screen
        w, h = self.framebuffer_size()
        t0 = time.perf_counter()
        low = splat_camera if splat_camera is not None and splat_camera.width < w else None
        occluder = None
        if occluder_verts is not None and self.occluder is not None:
            occluder = lambda: self.occluder.draw(occluder_verts, low or camera)  # noqa: E731
        if self.showing_image:
            fb.use()
            fb.clear(*settings.background, 1.0, depth=1.0)  # the overlays' depth test starts empty
            self.frame.draw((w, h))
        elif low is None:
            self.splat.draw_to(fb, camera, settings.background, occluder)
        else:
            self.splat.draw_upscaled(fb, low, (w, h), settings.background, occluder)
        self.ctx.viewport = (0, 0, w, h)
        if settings.show_mesh and mesh_verts is not None and self.mesh is not None:
            self.ctx.enable(moderngl.BLEND)
            self.ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA  # the mesh shader premultiplies
            self.mesh.draw(mesh_verts, camera, opacity=0.35)
            self.ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST)
        if settings.show_centres and centres is not None:
            self._draw_points(centres, camera)
        if settings.show_hud:
            self.hud.text = self.hud_text
            self.hud.draw()
        self.ctx.finish()
        timings.record("draw", (time.perf_counter() - t0) * 1e3)

    def _draw_points(self, points: np.ndarray, cam: Camera) -> None:
        from savatar.core.render.camera import gl_projection
        data = np.ascontiguousarray(points, np.float32)
        if data.nbytes > self._points_vbo.size:
            self._points_vbo.orphan(data.nbytes)
        self._points_vbo.write(data.tobytes())
        self._points_prog["viewmat"].write(cam.viewmat.T.astype(np.float32).tobytes())
        self._points_prog["proj"].write(gl_projection(cam.K, cam.width, cam.height).T.astype(np.float32).tobytes())
        self.ctx.point_size = 2.0
        self._points_vao.render(moderngl.POINTS, vertices=len(data))

    def set_mesh(self, faces: np.ndarray, colors: np.ndarray, occluder_faces: np.ndarray | None = None) -> None:
        """The overlay mesh, and the triangles (a subset) that may occlude splats."""
        self.window.switch_to()
        self.mesh = MeshRenderer(faces, colors, ctx=self.ctx)
        self.occluder = MeshRenderer(occluder_faces, colors, ctx=self.ctx) if occluder_faces is not None and len(occluder_faces) else None

    def render_offscreen(self, g: WorldGaussians, camera: Camera, background=(1.0, 1.0, 1.0)) -> SplatImage:
        """g drawn for camera (rgb on background, alpha), e.g. for a video export. A renderer of
        its own, so the window's sorted splats stay as they are."""
        self.window.switch_to()
        if self._offscreen is None:
            self._offscreen = SplatRenderer(self.ctx)
        return self._offscreen.render(g, camera, background)

    def flip(self) -> None:
        self.window.flip()

    def screenshot(self, path: str | Path) -> None:
        """The last drawn frame as a PNG (reads the back buffer before flip)."""
        self.window.switch_to()
        w, h = self.framebuffer_size()
        data = self.ctx.screen.read(viewport=(0, 0, w, h), components=3)
        from PIL import Image
        img = np.frombuffer(data, np.uint8).reshape(h, w, 3)[::-1]
        Image.fromarray(img).save(path)

    def close(self) -> None:
        self.window.close()

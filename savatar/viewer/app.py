"""`savatar-viewer`: the stage window (pyglet + moderngl).

This first version shows the bundled open head model as a shaded mesh, animated by a short
demo cycle of expressions; the Gaussian avatar, the Dear PyGui console and file drops arrive
with the viewer work (see the issues)."""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from savatar.core.camera import Camera, orbit_camera


@dataclass
class Orbit:
    """Trackball-style orbit around a target: drag rotates, scroll zooms."""

    yaw: float = 0.0
    pitch: float = 0.0
    distance: float = 0.75
    target: tuple[float, float, float] = (0.0, -0.03, -0.02)

    def camera(self, width: int, height: int) -> Camera:
        return orbit_camera(self.yaw, self.pitch, self.distance, self.target, width, height, fov_y_deg=30.0)

    def drag(self, dx: float, dy: float) -> None:
        self.yaw -= 0.4 * dx
        self.pitch = float(np.clip(self.pitch - 0.4 * dy, -85.0, 85.0))

    def zoom(self, steps: float) -> None:
        self.distance = float(np.clip(self.distance * 0.9 ** steps, 0.2, 3.0))


def demo_expression(t: float, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A few seconds of blinking, smiling and talking, looped: (expr (E,), pose (15,))."""
    expr = np.zeros(len(names), np.float32)
    pose = np.zeros(15, np.float32)
    blink = max(0.0, 1.0 - abs((t % 3.0) - 1.5) * 8.0)
    for side in ("L", "R"):
        expr[names.index(f"eyeBlink_{side}")] = blink
        expr[names.index(f"mouthSmile_{side}")] = 0.5 + 0.5 * math.sin(t * 0.7)
    pose[6] = 0.12 * max(0.0, math.sin(t * 5.0))  # jaw
    pose[3:6] = [0.05 * math.sin(t * 0.5), 0.25 * math.sin(t * 0.4), 0.0]  # neck
    return expr, pose


def run(size: tuple[int, int], smoke: int | None, screenshot: str | None) -> int:
    import moderngl
    import pyglet
    import torch

    from savatar.core.head_model import HeadModel
    from savatar.core.open_head import load_open_head_data
    from savatar.gl.mesh_renderer import MeshRenderer

    config = pyglet.gl.Config(major_version=3, minor_version=3, forward_compatible=True, double_buffer=True, depth_size=24)
    try:
        window = pyglet.window.Window(*size, caption="SpatialAvatar — stage", resizable=True, config=config,
                                      visible=smoke is None)
    except (pyglet.window.NoSuchConfigException, pyglet.canvas.xlib.NoSuchDisplayException) as exc:
        print(f"savatar-viewer: cannot open an OpenGL 3.3 window: {exc}", file=sys.stderr)
        return 2
    ctx = moderngl.create_context()
    # Per-frame deformation is many tiny ops: one thread avoids pool hand-offs that cost more
    # than the work (measured 1.3 ms vs 56 ms per forward with a busy second core).
    torch.set_num_threads(1)
    data = load_open_head_data()
    model = HeadModel(data)
    renderer = MeshRenderer(data.faces, data.vertex_colors, ctx=ctx)
    orbit = Orbit()
    state = {"playing": True, "t": 0.0, "frames": 0, "last": time.perf_counter(), "fps": 0.0}
    label = pyglet.text.Label("", x=8, y=8, color=(40, 40, 40, 255), font_size=10)

    def draw() -> None:
        w, h = window.get_framebuffer_size()
        expr, pose = demo_expression(state["t"], data.expr_names)
        with torch.no_grad():
            verts = model(expr=torch.from_numpy(expr)[None], pose=torch.from_numpy(pose)[None]).vertices[0].numpy()
        ctx.screen.use()
        ctx.viewport = (0, 0, w, h)
        ctx.clear(0.93, 0.94, 0.96, 1.0)
        renderer.draw(verts, orbit.camera(w, h))
        ctx.disable(moderngl.DEPTH_TEST)
        label.text = f"{state['fps']:.0f} FPS   drag: orbit   scroll: zoom   R: reset   Space: play/pause   S: screenshot   Esc: quit"
        label.draw()

    @window.event
    def on_draw():
        draw()

    @window.event
    def on_mouse_drag(x, y, dx, dy, buttons, modifiers):
        orbit.drag(dx, -dy)

    @window.event
    def on_mouse_scroll(x, y, scroll_x, scroll_y):
        orbit.zoom(scroll_y)

    def save_screenshot(path: str) -> None:
        pyglet.image.get_buffer_manager().get_color_buffer().save(path)
        print(f"saved {path}")

    @window.event
    def on_key_press(symbol, modifiers):
        keys = pyglet.window.key
        if symbol == keys.ESCAPE:
            window.close()
        elif symbol == keys.R:
            orbit.__init__()
        elif symbol == keys.SPACE:
            state["playing"] = not state["playing"]
        elif symbol == keys.S:
            save_screenshot(f"savatar-{time.strftime('%Y%m%d-%H%M%S')}.png")
        return pyglet.event.EVENT_HANDLED

    def tick(dt: float) -> None:
        if state["playing"]:
            state["t"] += dt
        state["frames"] += 1
        now = time.perf_counter()
        if now - state["last"] > 0.5:
            state["fps"] = state["frames"] / (now - state["last"])
            state["frames"], state["last"] = 0, now

    if smoke is not None:
        for _ in range(smoke):
            tick(1 / 30)
            window.switch_to()
            window.dispatch_events()
            draw()
            if screenshot and _ == smoke - 1:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                save_screenshot(f"{screenshot}stage.png")
            window.flip()
        window.close()
        return 0
    pyglet.clock.schedule_interval(tick, 1 / 60)
    pyglet.app.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="savatar-viewer", description="SpatialAvatar viewer: shows the bundled open head model.")
    parser.add_argument("--size", nargs=2, type=int, metavar=("W", "H"), default=(720, 720), help="stage size in pixels")
    parser.add_argument("--smoke", type=int, metavar="N", help="draw N frames without showing the window, then exit (CI)")
    parser.add_argument("--screenshot", metavar="PREFIX", help="with --smoke: save the last frame as PREFIXstage.png")
    args = parser.parse_args(argv)
    if min(args.size) <= 0:
        parser.error("--size needs positive numbers")
    return run(tuple(args.size), args.smoke, args.screenshot)


if __name__ == "__main__":
    sys.exit(main())

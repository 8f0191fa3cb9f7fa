"""Stage backends (savatar.viewer.stage_backends) in the running viewer under Xvfb: the cpu
backend's picture is `savatar render --backend cpu`'s, switching live keeps the camera and the
avatar, the overlays draw over the rasterized image, and a gsplat that cannot load or run leaves
one line in the Log while gl draws on. The gsplat backend itself needs CUDA and is not run here."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from savatar.viewer.stage_backends import resolve_stage_backend, stage_scale
from savatar.viewer.state import RenderSettings
from app_harness import pump, running_app

needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (scripts/test.sh starts Xvfb)")
SIZE = 256


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """a, b: uint8-range float images."""
    mse = float(((a / 255.0 - b / 255.0) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def test_auto_means_gsplat_with_cuda_else_gl():
    assert resolve_stage_backend("auto", cuda=True) == "gsplat"
    assert resolve_stage_backend("auto", cuda=False) == "gl"
    for name in ("gl", "gsplat", "cpu"):
        assert resolve_stage_backend(name, cuda=False) == name
    with pytest.raises(ValueError, match="unknown stage backend"):
        resolve_stage_backend("vulkan")


def test_cpu_draws_smaller_than_gl_while_moving_unless_told():
    auto, full = RenderSettings(quality="auto"), RenderSettings(quality="full")
    assert stage_scale(auto, True, "cpu") < stage_scale(auto, True, "gl") < 1.0
    assert stage_scale(auto, False, "cpu") == stage_scale(full, True, "cpu") == 1.0
    assert stage_scale(RenderSettings(quality="half"), True, "cpu") == 0.5


def test_settings_keep_the_stage_backend(tmp_path):
    from savatar.viewer.settings import Settings, load_settings, save_settings

    path = tmp_path / "settings.json"
    save_settings(Settings(stage_backend="cpu"), path)
    assert load_settings(path)[0].stage_backend == "cpu"
    path.write_text('{"stage_backend": "vulkan"}')
    assert load_settings(path)[0].stage_backend == "auto"  # unknown: the default, no failure


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory.mktemp("config"), (SIZE, SIZE), stage_backend="gl")


def set_widget(item, value):
    import inspect

    import dearpygui.dearpygui as dpg

    dpg.set_value(item, value)
    callback = dpg.get_item_callback(item)
    callback(*(item, value, dpg.get_item_user_data(item))[:len(inspect.signature(callback).parameters)])


def stage_image(app, path) -> np.ndarray:
    app.screenshot_stage(path)
    return np.asarray(Image.open(path).convert("RGB")).astype(float)


@pytest.fixture
def still_stage(app):
    """Full resolution, no HUD (its timings change from frame to frame), gl afterwards."""
    set_widget(app.console.quality, "full")
    set_widget(app.console.show_hud, False)
    yield app
    set_widget(app.console.backend, "gl")
    set_widget(app.console.quality, "auto")
    set_widget(app.console.show_hud, True)
    app.driving.reset()
    app.stage.orbit.reset()
    pump(app)


@needs_display
def test_cpu_stage_matches_savatar_render_cpu(still_stage, tmp_path):
    """The same pose and camera through the viewer's texture path and through the CLI."""
    from savatar.commands.render import head_centre
    from savatar.core.build.default_avatar import default_avatar
    from savatar.core.gaussians.rig import Rig

    app = still_stage
    yaw, pitch, distance, fov, jaw_deg = 25.0, 10.0, 0.7, 30.0, 12.0
    background = (0.2, 0.3, 0.4)
    ref = tmp_path / "ref.png"
    subprocess.run([sys.executable, "-c", "import sys; from savatar.cli import main; sys.exit(main())", "render",
                    "--backend", "cpu", "--pose", f"jaw={jaw_deg},0,0", "--yaw", str(yaw), "--pitch", str(pitch),
                    "--distance", str(distance), "--fov", str(fov), "-W", str(SIZE), "-H", str(SIZE),
                    "--background", ",".join(map(str, background)), "-o", str(ref)], check=True, capture_output=True)

    pose = np.zeros(15, np.float32)
    pose[6] = math.radians(jaw_deg)
    with torch.no_grad():  # where the CLI aims: its head_centre of the posed mesh
        target = head_centre(Rig.of(default_avatar()).vertices(None, pose).numpy())
    app.driving.set_pose(6, float(pose[6]))
    o = app.stage.orbit
    o.yaw, o.pitch, o.distance, o.fov, o.target = yaw, pitch, distance, fov, [float(t) for t in target]
    set_widget(app.console.bg_color, [round(c * 255) for c in background] + [255])
    set_widget(app.console.backend, "cpu")
    pump(app)
    assert app.backend.name == "cpu" and app.stage.framebuffer_size() == (SIZE, SIZE)
    shot = stage_image(app, tmp_path / "stage.png")
    reference = np.asarray(Image.open(ref).convert("RGB")).astype(float)
    set_widget(app.console.bg_color, [237, 240, 245, 255])
    # Same rasterizer, same 8-bit rounding; the stage skips Gaussians facing away (measured
    # 50 dB with that on).
    assert psnr(shot, reference) > 35


@needs_display
def test_switching_backends_live_keeps_camera_and_avatar(still_stage, tmp_path):
    app = still_stage
    app.stage.orbit.yaw, app.stage.orbit.pitch = -35.0, 8.0
    app.driving.set_pose(6, 0.2)
    pump(app)
    camera, rig, version = app.stage.orbit.to_dict(), app.shown.rig, app.shown.version
    gl_before = stage_image(app, tmp_path / "gl1.png")
    set_widget(app.console.backend, "cpu")
    pump(app)
    assert app.backend.name == "cpu"
    cpu = stage_image(app, tmp_path / "cpu.png")
    set_widget(app.console.backend, "gl")
    pump(app)
    gl_after = stage_image(app, tmp_path / "gl2.png")
    assert app.backend.name == "gl"
    assert app.stage.orbit.to_dict() == camera and app.shown.rig is rig and app.shown.version == version
    # Two renderers of one image formation (gl lacks the transmittance stop): measured 51 dB.
    assert psnr(cpu, gl_before) > 30
    assert psnr(gl_after, gl_before) > 45
    # The picture is of the avatar, not an empty stage.
    assert (np.abs(cpu - cpu[0, 0]).sum(-1) > 30).mean() > 0.1


@needs_display
def test_overlays_draw_over_the_cpu_image(still_stage, tmp_path):
    app = still_stage
    set_widget(app.console.backend, "cpu")
    pump(app)
    plain = stage_image(app, tmp_path / "plain.png")
    set_widget(app.console.show_mesh, True)
    pump(app)
    mesh = stage_image(app, tmp_path / "mesh.png")
    set_widget(app.console.show_mesh, False)
    head = np.abs(plain - plain[0, 0]).sum(-1) > 30
    changed = np.abs(mesh - plain).sum(-1) > 30
    assert changed[head].mean() > 0.2 and changed[~head].mean() < 0.05  # the mesh lies over the head

    spikes = np.zeros(len(app.shown.rig.avatar), bool)
    spikes[::2] = True
    old = app.shown.spikes
    app.shown.spikes = spikes
    set_widget(app.console.highlight, True)
    pump(app)
    red = stage_image(app, tmp_path / "red.png")
    set_widget(app.console.highlight, False)
    app.shown.spikes = old
    is_red = (red[..., 0] > 150) & (red[..., 1] < 90) & (red[..., 2] < 90)
    was_red = (plain[..., 0] > 150) & (plain[..., 1] < 90) & (plain[..., 2] < 90)
    assert is_red[head].mean() > 0.3 and was_red[head].mean() < 0.01


def new_lines(app, before: int) -> list:
    return app.log.entries()[before:]


@needs_display
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fall-back on a machine without CUDA")
def test_gsplat_without_cuda_falls_back_to_gl_with_one_line(still_stage, tmp_path):
    import dearpygui.dearpygui as dpg

    app = still_stage
    before = len(app.log.entries())
    set_widget(app.console.backend, "gsplat")
    pump(app, frames=5)
    lines = new_lines(app, before)
    assert len(lines) == 1 and lines[0].level == "error" and "gsplat" in lines[0].text and "CUDA" in lines[0].text
    assert app.backend.name == "gl" and dpg.get_value(app.console.backend) == "gl"
    shot = stage_image(app, tmp_path / "after.png")
    assert (np.abs(shot - shot[0, 0]).sum(-1) > 30).mean() > 0.1  # gl draws the avatar


@needs_display
def test_gsplat_that_cannot_load_falls_back_with_one_line(still_stage, monkeypatch):
    """As on a CUDA machine whose gsplat install is broken: the check on the worker fails."""
    import dearpygui.dearpygui as dpg

    import savatar.viewer.app as app_module

    def broken() -> None:
        raise ImportError("No module named 'gsplat'")

    app = still_stage
    monkeypatch.setattr(app_module, "gsplat_problem", lambda: None)
    monkeypatch.setattr(app_module, "check_gsplat", broken)
    before = len(app.log.entries())
    set_widget(app.console.backend, "gsplat")
    pump(app, until=lambda: len(app.log.entries()) > before)
    pump(app, frames=3)
    lines = new_lines(app, before)
    assert len(lines) == 1 and "gsplat" in lines[0].text and "No module named 'gsplat'" in lines[0].text
    assert app.backend.name == "gl" and dpg.get_value(app.console.backend) == "gl"


@needs_display
def test_a_backend_failing_mid_session_falls_back_with_one_line(still_stage, monkeypatch, tmp_path):
    app = still_stage
    set_widget(app.console.backend, "cpu")
    pump(app)

    def fail(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(app.backend, "rasterize", fail)
    before = len(app.log.entries())
    app.driving.set_pose(6, 0.15)  # a new frame to make
    pump(app, frames=4)
    lines = new_lines(app, before)
    assert len(lines) == 1 and "illegal memory access" in lines[0].text and "gl" in lines[0].text
    assert app.backend.name == "gl"
    shot = stage_image(app, tmp_path / "after.png")
    assert (np.abs(shot - shot[0, 0]).sum(-1) > 30).mean() > 0.1


@needs_display
def test_asking_for_gsplat_without_cuda_never_imports_gsplat(tmp_path):
    """gsplat's CUDA wrappers try to build the extension when called without CUDA: the stage
    must not even import gsplat when CUDA is absent."""
    if torch.cuda.is_available():
        pytest.skip("checks a machine without CUDA")
    code = (
        "import os, sys\n"
        "from savatar.core.build.default_avatar import default_avatar\n"
        "from savatar.viewer.app import App\n"
        "app = App(default_avatar(2000), None, (96, 96), stage_backend='gsplat')\n"
        "app.log.echo = False\n"
        "for _ in range(3):\n"
        "    app.step(1 / 30)\n"
        "lines = [e.text for e in app.log.entries() if 'gsplat' in e.text]\n"
        "app.running = False\n"
        "app.shutdown()\n"
        "print(app.backend.name, 'gsplat' in sys.modules, len(lines))\n"
    )
    env = dict(os.environ, SAVATAR_CONFIG_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["gl", "False", "1"]

"""The viewer app under Xvfb: both windows, sliders change the picture, file drops do their
thing, bad files never replace the avatar, quit is quick and joins every thread."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image
from app_harness import pump, running_app

pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (scripts/test.sh starts Xvfb)")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory.mktemp("config"), (256, 256))


def set_widget(item, value):
    """What a user's change does: the widget takes the value, then its callback runs (with the
    arguments Dear PyGui would give it)."""
    import inspect

    import dearpygui.dearpygui as dpg

    dpg.set_value(item, value)
    callback = dpg.get_item_callback(item)
    callback(*(item, value, dpg.get_item_user_data(item))[:len(inspect.signature(callback).parameters)])


def click(button):
    import dearpygui.dearpygui as dpg

    dpg.get_item_callback(button)()


def stage_image(app, tmp_path, name):
    path = tmp_path / f"{name}.png"
    app.screenshot_stage(path)
    return np.asarray(Image.open(path).convert("RGB")).astype(float)


def test_moving_a_slider_changes_the_render(app, tmp_path):
    # Full resolution throughout: with "auto", a frame right after a change is drawn at half
    # resolution, and the blur alone would count as change.
    set_widget(app.console.quality, "full")
    set_widget(app.console.show_hud, False)
    pump(app)
    before = stage_image(app, tmp_path, "before")
    app.driving.set_pose(6, 0.35)  # open the jaw
    app.driving.set_expr(app.shown.rig.data.expr_names.index("eyeBlink_L"), 1.0)
    pump(app)
    after = stage_image(app, tmp_path, "after")
    changed = np.abs(after - before).sum(-1) > 30
    assert 0.002 < changed.mean() < 0.3  # the face changed, the whole frame did not
    # Only around the mouth and eyes: the top of the head (hair) is the same.
    assert changed[: changed.shape[0] // 4].mean() < 0.01
    app.driving.reset()
    set_widget(app.console.quality, "auto")
    set_widget(app.console.show_hud, True)
    pump(app)


def test_render_settings_change_through_the_console_callbacks_not_by_polling(app):
    import dearpygui.dearpygui as dpg

    assert app.render.sh_degree == 3 and app.render.show_mesh is False
    set_widget(app.console.sh_degree, 1)
    set_widget(app.console.show_mesh, True)
    # The app has the new settings at once, typed, before any frame ran.
    assert app.render.sh_degree == 1 and app.render.show_mesh is True and app.render.quality == "auto"
    assert app.render.background == pytest.approx((237 / 255, 240 / 255, 245 / 255))
    set_widget(app.console.fov, 40.0)
    assert app.stage.orbit.fov == pytest.approx(40.0)
    # A widget value that no callback reported is not read by the frame loop.
    dpg.set_value(app.console.scale_mod, 0.5)
    dpg.set_value(app.console.strength, 0.25)
    pump(app)
    assert app.render.scale_modifier == 1.0 and app.driving.drive.strength == 1.0
    set_widget(app.console.strength, 0.25)
    assert app.driving.drive.strength == 0.25
    set_widget(app.console.strength, 1.0)
    set_widget(app.console.scale_mod, 1.0)
    set_widget(app.console.fov, 30.0)
    set_widget(app.console.show_mesh, False)
    set_widget(app.console.sh_degree, 3)
    # The H key goes the same way.
    app.handle_key("hud")
    assert app.render.show_hud is False and dpg.get_value(app.console.show_hud) is False
    app.handle_key("hud")
    assert app.render.show_hud is True
    pump(app)


def test_a_task_reaches_the_console_through_the_main_loop(app):
    """A worker's fraction and text reach the panel's progress bar and status line when the
    main loop runs, not before; a cancel from the main thread reaches the worker."""
    import dearpygui.dearpygui as dpg

    view = app.console.task_views["Build"]
    task = app.tasks.start("test", "Build", "waiting")
    halfway = threading.Event()
    ended: list[str] = []

    def work() -> bool:  # on the worker: only the task is touched
        task.on_stage(0.25, "a quarter")
        task.frame_counter("counting")(6, 12)
        halfway.set()
        return task.cancel_event.wait(20)

    app.jobs.submit("test", work, lambda cancelled: (ended.append("cancelled" if cancelled else "timed out"),
                                                     task.finish("stopped by the test")), lambda e: ended.append(str(e)))
    assert halfway.wait(20)
    assert dpg.get_value(view.text) != "counting: frame 6/12"  # nothing reached the GUI from the worker
    pump(app, frames=1)
    assert dpg.get_value(view.bar) == pytest.approx(0.5) and dpg.get_value(view.text) == "counting: frame 6/12"
    assert task.running and not ended
    task.cancel()
    pump(app, until=lambda: bool(ended))
    assert ended == ["cancelled"] and not task.running
    assert dpg.get_value(view.text) == "stopped by the test"


def test_hud_counts_drawn_frames_and_says_idle(app, monkeypatch):
    """The HUD's rate is frames drawn per second, not loop turns; a still scene is not redrawn
    and, after a second, the HUD says idle. The loop's clock is the test's: no timing waits."""
    import types

    import savatar.viewer.app as app_module

    clock = types.SimpleNamespace(now=time.perf_counter() + 1000.0)  # after every real frame drawn
    clock.perf_counter = lambda: clock.now
    monkeypatch.setattr(app_module, "time", types.SimpleNamespace(perf_counter=clock.perf_counter,
                                                                  strftime=time.strftime))
    set_widget(app.console.show_hud, True)
    drawn: list[str] = []
    real_draw = app.stage.draw
    monkeypatch.setattr(app.stage, "draw", lambda *a, **k: (drawn.append(app.stage.hud_text), real_draw(*a, **k)))
    for _ in range(10):  # animated: a new jaw every frame, 20 frames a second
        app.driving.set_pose(6, app.driving.drive.pose[6] + 0.01)
        clock.now += 0.05
        app.step(0.05)
    assert len(drawn) == 10
    assert drawn[-1].startswith(" 20.0 FPS"), drawn[-1]
    before = len(drawn)
    for _ in range(100):  # still: 1000 loop turns a second, nothing new to draw
        clock.now += 0.001
        app.step(0.001)
    assert len(drawn) - before <= 1  # at most the full-resolution frame once still
    for _ in range(20):  # over a second later: one more frame saying idle, then nothing
        clock.now += 0.1
        app.step(0.1)
    assert "idle" in drawn[-1] and "FPS" not in drawn[-1].splitlines()[0]
    count = len(drawn)
    for _ in range(5):
        clock.now += 0.1
        app.step(0.1)
    assert len(drawn) == count
    app.driving.reset()


@pytest.mark.parametrize("yaw", [0.0, 70.0, 160.0])
def test_occlusion_prepass_hides_nothing_visible(app, tmp_path, yaw):
    app.stage.orbit.yaw = yaw
    set_widget(app.console.quality, "full")
    set_widget(app.console.show_hud, False)  # its timings differ from frame to frame
    images = []
    for on in (True, False):
        set_widget(app.console.occlusion, on)
        pump(app)
        images.append(stage_image(app, tmp_path, f"occl{on}") / 255.0)
    set_widget(app.console.occlusion, True)
    set_widget(app.console.quality, "auto")
    set_widget(app.console.show_hud, True)
    app.stage.orbit.yaw = 0.0
    mse = float(((images[0] - images[1]) ** 2).mean())
    assert 10 * np.log10(1 / max(mse, 1e-12)) > 40  # measured 46-53 dB


def test_screenshots_of_both_windows(app, tmp_path):
    pump(app)
    app.screenshots(str(tmp_path / "shot_"))
    stage = np.asarray(Image.open(tmp_path / "shot_stage.png").convert("RGB")).astype(float)
    console = np.asarray(Image.open(tmp_path / "shot_console.png").convert("RGB")).astype(float)
    assert stage.std() > 10 and console.std() > 10
    # The console is Dear PyGui's dark theme, the stage a light background with a face.
    assert console.mean() < 100 < stage.mean()


def drop(app, paths):
    app.stage.window.dispatch_event("on_file_drop", 10, 10, [str(p) for p in paths])


def test_file_drops(app, tmp_path):
    from savatar.core.drive.motion import Motion, save_motion
    from savatar.core.gaussians.binding import init_avatar
    from savatar.core.head.open_head import load_open_head_data
    from savatar.core.io.avatar_file import save_avatar

    data = load_open_head_data()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "face.png")
    save_avatar(init_avatar(data, 2000, seed=3), tmp_path / "small.h5", head=data)
    t = 5
    save_motion(Motion(25.0, np.zeros((t, len(data.expr_names)), np.float32), np.zeros((t, 15), np.float32),
                       np.zeros((t, 3), np.float32), data.expr_names), tmp_path / "m.npz")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    shown = app.shown.rig

    drop(app, [tmp_path / "broken.h5", tmp_path / "notes.txt"])
    pump(app, until=lambda: not app.jobs.busy)
    pump(app)
    errors = [e.text for e in app.log.entries() if e.level == "error"]
    assert any("broken.h5" in e for e in errors) and any("notes.txt" in e for e in errors)
    assert app.shown.rig is shown  # a bad file never replaces the avatar on screen

    drop(app, [tmp_path / "face.png", tmp_path / "small.h5", tmp_path / "m.npz"])
    pump(app, until=lambda: not app.jobs.busy)
    pump(app)
    assert any(p.path.endswith("face.png") for p in app.building.portraits)
    assert not app.building.portraits[-1].ok and "no face" in app.building.portraits[-1].status  # a flat grey square
    assert len(app.shown.rig.avatar) == 2000
    assert app.driving.playback.motion is not None and len(app.driving.playback.motion) == t
    assert app.driving.drive.source == "motion file"


def test_save_as_export_ply_and_mp4_from_the_console(app, tmp_path):
    import cv2
    from plyfile import PlyData

    from savatar.core.io.avatar_file import load_avatar

    app.files.save(str(tmp_path / "saved.h5"))
    app.files.export_ply(str(tmp_path / "scene.ply"))
    app.files.export_video(str(tmp_path / "orbit.mp4"), frames=4)
    pump(app, until=lambda: not app.jobs.busy and not app.files.exporting)
    pump(app)
    assert len(load_avatar(tmp_path / "saved.h5")) == len(app.shown.rig.avatar)
    assert PlyData.read(str(tmp_path / "scene.ply"))["vertex"].count == len(app.shown.rig.avatar)
    cap = cv2.VideoCapture(str(tmp_path / "orbit.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == (len(app.driving.playback.motion) if app.driving.playback.motion else 4)
    assert app.shown.path == str(tmp_path / "saved.h5")


def test_build_from_a_dropped_portrait(app, tmp_path):
    import dearpygui.dearpygui as dpg
    import skimage.data

    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astronaut.png")
    app.building.clear_portraits()
    drop(app, [tmp_path / "astronaut.png"])
    pump(app, until=lambda: not app.jobs.busy)
    portraits = app.building.portraits
    assert len(portraits) == 1 and portraits[0].ok, portraits[0].status
    assert portraits[0].preview[..., 1].max() > 0.9  # landmarks drawn in green
    dpg.set_value(app.console.build_count, 5000)
    before = app.shown.rig
    click(app.console.build_button)
    pump(app, until=lambda: not app.building.busy and not app.jobs.busy, timeout=120)
    pump(app)
    assert app.shown.rig is not before and len(app.shown.rig.avatar) == 5000
    assert "thumbnails" in app.shown.rig.avatar.metadata
    assert app.building.task.state().fraction == 1.0
    assert dpg.get_value(app.console.task_views["Build"].bar) == 1.0


def test_refine_the_built_avatar_live(app):
    import dearpygui.dearpygui as dpg

    assert app.shown.rig.avatar.metadata.get("sources"), "runs after test_build_from_a_dropped_portrait"
    faces = app.shown.rig.avatar.face.clone()
    dpg.set_value(app.console.refine_iters, 6)
    click(app.console.refine_start)
    refining = app.refining
    assert refining.refiner is not None
    click(app.console.refine_pause_button)
    assert refining.refiner.paused
    click(app.console.refine_pause_button)
    pump(app, until=lambda: refining.refiner is None and not app.jobs.busy, timeout=180)
    pump(app)
    assert refining.history and refining.history[-1].iteration == 6
    assert all(np.isfinite(r.losses["total"]) for r in refining.history if "total" in r.losses)
    assert any("total" in r.losses for r in refining.history)
    assert torch_equal(app.shown.rig.avatar.face, faces)  # binding and count unchanged
    assert "finished" in dpg.get_value(app.console.task_views["Refine"].text)


def test_refine_from_a_video_tracks_it_first(app, astronaut_video):
    import dearpygui.dearpygui as dpg

    refining = app.refining
    set_widget(app.console.refine_data, "video")
    dpg.set_value(app.console.refine_path, str(astronaut_video.with_name("missing.mp4")))
    click(app.console.refine_start)
    assert refining.refiner is None and "no such file" in app.log.entries()[-1].text
    dpg.set_value(app.console.refine_path, str(astronaut_video))
    dpg.set_value(app.console.refine_iters, 3)
    click(app.console.refine_start)
    # Tracking on a worker; the interface keeps running.
    assert refining.task.name == "track" and refining.busy and refining.refiner is None
    pump(app, until=lambda: not refining.busy and not app.jobs.busy, timeout=240)
    pump(app)
    assert any("tracked frames" in e.text for e in app.log.entries()), [e.text for e in app.log.entries()][-5:]
    assert refining.history and refining.history[-1].iteration == 3
    set_widget(app.console.refine_data, "the avatar's portraits")


def test_stop_while_a_video_is_tracked_starts_no_refinement(app, astronaut_video):
    import dearpygui.dearpygui as dpg

    refining = app.refining
    set_widget(app.console.refine_data, "video")
    dpg.set_value(app.console.refine_path, str(astronaut_video))
    seen = len(app.log.entries())
    click(app.console.refine_start)
    assert refining.task.name == "track" and refining.busy
    app.refining.stop()
    pump(app, until=lambda: not refining.busy and not app.jobs.busy, timeout=240)
    pump(app)
    assert refining.refiner is None
    assert not any(e.text.startswith("refining ") for e in app.log.entries()[seen:])
    assert dpg.get_value(app.console.task_views["Refine"].text) == "stopped before refining"
    set_widget(app.console.refine_data, "the avatar's portraits")


def torch_equal(a, b) -> bool:
    import torch
    return bool(torch.equal(a, b))


def test_missing_webcam_is_reported_and_sliders_stay(app):
    import dearpygui.dearpygui as dpg

    dpg.set_value(app.console.video_device, "7")
    set_widget(app.console.source_combo, "webcam")
    pump(app, until=lambda: not app.jobs.busy)
    pump(app)
    assert app.driving.drive.source == "sliders" and app.driving.live is None
    assert any("no webcam at index 7" in e.text for e in app.log.entries() if e.level == "error")


def test_video_file_drives_the_avatar(app, astronaut_video):
    import dearpygui.dearpygui as dpg

    dpg.set_value(app.console.video_device, str(astronaut_video))
    set_widget(app.console.source_combo, "webcam")
    driving = app.driving
    pump(app, until=lambda: driving.live is not None and driving.live.latest() is not None
         and driving.live.latest().status == "ok", timeout=30)
    pump(app)
    assert driving.drive.source == "webcam"
    assert "fit" in app.stage.hud_text and "landmarks" in app.stage.hud_text
    set_widget(app.console.source_combo, "sliders")
    assert driving.live is None


def test_side_by_side_needs_a_live_video_source(app, tmp_path):
    import dearpygui.dearpygui as dpg

    set_widget(app.console.source_combo, "sliders")
    pump(app, frames=1)
    assert not dpg.get_item_configuration(app.console.side_by_side_button)["enabled"]
    app.side_by_side.start(str(tmp_path / "x.mp4"))
    pump(app)
    assert not app.side_by_side.recording
    assert "webcam or video file" in [e.text for e in app.log.entries() if e.level == "warning"][-1]
    assert not list(tmp_path.iterdir())


def test_side_by_side_recording_of_a_video_source(app, astronaut_video, tmp_path):
    """real | avatar | error, each a video frame wide, written while the video drives; the file
    appears on stop."""
    import dearpygui.dearpygui as dpg

    from savatar.core.drive.tracking import VideoReader

    dpg.set_value(app.console.video_device, str(astronaut_video))
    set_widget(app.console.source_combo, "webcam")
    recorder, button = app.side_by_side, app.console.side_by_side_button
    pump(app, until=lambda: app.driving.video_source() is not None, timeout=60)
    assert dpg.get_item_configuration(button)["enabled"]
    # A path that cannot be written: an error in the Log, and the loop runs on.
    recorder.start(str(tmp_path / "missing" / "z.mp4"))
    pump(app, until=lambda: not recorder.recording, timeout=180)
    assert not recorder.recording and "z.mp4" in [e.text for e in app.log.entries() if e.level == "error"][-1]
    out = tmp_path / "x.mp4"
    dpg.get_item_callback(app.console.dialogs["side_by_side"])(None, {"file_path_name": str(out)})  # the user's choice
    assert recorder.recording
    pump(app, until=lambda: recorder.frames >= 3, timeout=180)
    assert recorder.frames >= 3 and not out.exists()  # written to a temp file until it stops
    assert dpg.get_item_label(button) == "Stop side-by-side"
    assert "frames written" in dpg.get_value(app.console.side_by_side_text)
    click(button)
    assert not recorder.recording and out.exists()
    # Another source taking over stops a recording too.
    recorder.start(str(tmp_path / "y.mp4"))
    pump(app, until=lambda: recorder.frames >= 1, timeout=180)
    set_widget(app.console.source_combo, "sliders")
    pump(app)
    assert not recorder.recording and (tmp_path / "y.mp4").exists()
    assert dpg.get_item_label(button) == "Record side-by-side..."

    with VideoReader(astronaut_video) as video:
        real = [f.astype(float) for _, f in video.frames()]
    with VideoReader(out) as video:
        recorded = [f.astype(float) for _, f in video.frames()]
    h, w = real[0].shape[:2]
    assert len(recorded) >= 2 and recorded[0].shape == (h, 3 * w, 3)
    for frame in recorded:
        left, middle = frame[:, :w], frame[:, w:2 * w]
        assert min(np.abs(left - r).mean() for r in real) < 6  # one of the video's frames
        avatar = np.abs(middle - 255).max(-1) > 40  # drawn on white
        assert 0.05 < avatar.mean() < 0.8


def test_quit_is_quick_and_joins_every_thread(app):
    app.quit()
    t0 = time.time()
    app.run()
    # Each join gives up after 2 s: this bound catches a thread that hangs, not a slow machine.
    assert time.time() - t0 < 10.0
    assert not [t for t in threading.enumerate() if t.name.startswith(("job:", "drive:")) and t.is_alive()]

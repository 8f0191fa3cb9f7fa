"""Building from a video in the viewer (issue 16): a video dropped on the stage (or picked with
the Build panel's Video...) queues the frames chosen from it as thumbnails; Build makes the
avatar from them and then refines it against the clip by itself; clips that give no frames are
one line in the Log. The clip is tests/core/build/turning_clip.py's synthetic turning head, whose
spoiled frames (blurred, eyes closed) are known."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from app_harness import pump, running_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "build"))

from turning_clip import render_turning_clip  # noqa: E402

from savatar.viewer.drops import DropKind, classify  # noqa: E402

needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"),
                                   reason="needs an X display (scripts/test.sh starts Xvfb)")


def test_videos_are_told_from_the_other_drops():
    assert classify("/a/clip.mp4") is DropKind.VIDEO
    assert classify("SELFIE.MOV") is DropKind.VIDEO
    assert classify("x.webm") is DropKind.VIDEO and classify("x.avi") is DropKind.VIDEO
    assert classify("face.jpg") is DropKind.PORTRAIT
    assert classify("me.h5") is DropKind.AVATAR and classify("m.npz") is DropKind.MOTION
    assert classify("notes.txt") is DropKind.UNKNOWN and classify("mp4") is DropKind.UNKNOWN


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return render_turning_clip(tmp_path_factory.mktemp("turning") / "turning.mp4")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory.mktemp("config"), (256, 256))


def drop(app, paths):
    """As a user's drop: the window queues the event, the next dispatch hands it to the app."""
    app.stage.window.dispatch_event("on_file_drop", 10, 10, [str(p) for p in paths])
    app.stage.dispatch_events()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2) / 255.0 ** 2
    return float(10 * np.log10(1 / max(mse, 1e-12)))


@needs_display
def test_a_dropped_clip_queues_the_frames_chosen_from_it(app, clip):
    import dearpygui.dearpygui as dpg

    app.building.clear_portraits()
    dpg.set_value(app.console.tab_bar, app.console.tabs["Drive"])
    drop(app, [clip.path])
    assert app.building.scanning and app.building.scan_task.panel == "Build"  # on a worker
    assert dpg.get_value(app.console.tab_bar) == app.console.tabs["Build"]  # the panel the drop fills
    pump(app, until=lambda: not app.building.scanning and not app.jobs.busy)
    pump(app)
    queued = app.building.portraits
    assert 2 <= len(queued) <= app.console.video_sources(), [p.status for p in queued]
    assert all(p.ok for p in queued), [p.status for p in queued]
    frames = [p.frame for p in queued]
    assert all(p.label == f"turning.mp4 frame {p.frame}" and p.status.startswith(p.label) for p in queued)
    assert all("head yaw" in p.status for p in queued)
    assert not set(frames) & set(clip.spoiled), (frames, clip.spoiled)
    yaws = [clip.yaw[f] for f in frames]
    assert min(yaws) <= -20 and max(yaws) >= 20  # both sides of the turn
    for p in queued:  # the frame's own pixels (as written, up to the codec), landmarks drawn on its thumbnail
        assert psnr(p.image, clip.frames[p.frame]) > 30
        assert p.preview[..., 1].max() > 0.9
    assert dpg.get_value(app.console.task_views["Build"].bar) == 1.0
    assert "frames chosen" in dpg.get_value(app.console.task_views["Build"].text)


@needs_display
def test_build_from_the_frames_then_refine_against_the_clip(app, clip):
    import dearpygui.dearpygui as dpg

    from savatar.core.refine.time_budget import TimeBudget
    from savatar.commands.build_video import REFINE_SIZE

    b = app.building
    assert b.portraits and b.portraits[0].frame is not None, "runs after test_a_dropped_clip_queues_..."
    # Changeable: the last chosen frame removed, the first two swapped.
    b.remove_portrait(len(b.portraits) - 1)
    b.move_portrait(0, 1)
    kept = [p.label for p in b.portraits]
    dpg.set_value(app.console.build_count, 5000)
    dpg.set_value(app.console.refine_after, False)  # a video's build is refined all the same
    before = app.shown.rig
    seen = len(app.log.entries())
    dpg.get_item_callback(app.console.build_button)()
    pump(app, until=lambda: not b.busy, timeout=180)
    assert app.shown.rig is not before and len(app.shown.rig.avatar) == 5000
    assert [s["name"] for s in app.shown.rig.avatar.metadata["sources"]] == kept
    built = splats(app.shown.rig.avatar)
    # The refinement started by itself: first the clip's frames are tracked, on a worker.
    refining = app.refining
    assert refining.busy and refining.task.name == "track" and "turning.mp4" in refining.task.state().text
    assert dpg.get_value(app.console.tab_bar) == app.console.tabs["Refine"]
    assert dpg.get_value(app.console.refine_data) == "video" and dpg.get_value(app.console.refine_path) == str(clip.path)
    pump(app, until=lambda: refining.refiner is not None or not refining.busy, timeout=180)
    assert refining.refiner is not None, [e.text for e in app.log.entries()[seen:]]
    frames = refining.frames
    assert len(frames) >= len(clip.yaw) - len(clip.spoiled)  # the clip's frames, not the avatar's portraits
    assert all(max(f.height, f.width) <= REFINE_SIZE for f in frames)
    assert any(isinstance(h, TimeBudget) for h in refining.refiner.pre_step_hooks)
    # As build --video: the clip's last stretch (a fifth, at least two frames) is held out of training.
    held = refining.refiner.config.held_out
    assert held == tuple(range(len(frames) - len(held), len(frames))) and 2 <= len(held) <= len(frames) // 4
    pump(app, until=lambda: len(refining.history) >= 2, timeout=240)
    assert len(refining.history) >= 2
    # The stage shows the avatar improving: the shown avatar is the refiner's, moved from the built one.
    assert app.shown.rig.avatar.face.shape == (5000,)
    assert not np.allclose(splats(app.shown.rig.avatar), built)
    assert any("total" in r.losses for r in refining.history)
    refining.stop()
    pump(app, until=lambda: not refining.busy and not app.jobs.busy, timeout=120)
    assert refining.refiner is None and not refining.busy
    assert any(e.text.startswith("refinement ended") for e in app.log.entries()[seen:])


def splats(avatar) -> np.ndarray:
    """What refinement changes of each Gaussian, flattened: place, colour, opacity."""
    return np.concatenate([t.detach().reshape(len(avatar), -1).numpy()
                           for t in (avatar.mean, avatar.sh, avatar.opacity_logit)], 1)


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, frames[0].shape[1::-1])
    for f in frames:
        w.write(f)
    w.release()
    return path


@needs_display
def test_clips_that_give_no_frames_are_one_log_line(app, clip, tmp_path):
    import skimage.data

    face = cv2.resize(skimage.data.astronaut()[..., ::-1], (256, 256))
    cases = {  # file -> what its line says
        (tmp_path / "notes.mp4"): "cannot be read as a video",
        _write(tmp_path / "short.avi", [face] * 4): "too short",
        _write(tmp_path / "wall.avi", [np.full((240, 320, 3), 120, np.uint8)] * 15): "no face",
    }
    (tmp_path / "notes.mp4").write_text("not a video")
    app.building.clear_portraits()
    for path, reason in cases.items():
        seen = len(app.log.entries())
        drop(app, [path])
        pump(app, until=lambda: not app.building.scanning and not app.jobs.busy)
        pump(app)
        errors = [e.text for e in app.log.entries()[seen:] if e.level == "error"]
        assert len(errors) == 1 and path.name in errors[0] and reason in errors[0], errors
        assert "\n" not in errors[0]
        assert app.running and not app.building.portraits
    # Still working: the next clip is scanned as before.
    drop(app, [clip.path])
    pump(app, until=lambda: not app.building.scanning and not app.jobs.busy)
    assert app.building.portraits

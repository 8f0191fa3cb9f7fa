"""What moves the avatar: the sliders, a motion file (played, sought) or a live source (webcam
or video file, microphone, audio file), and the recorder of whatever drives it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from savatar.core.drive.motion import Motion, load_motion, save_motion
from savatar.core.gaussians.rig import Rig
from savatar.viewer.log import Log
from savatar.viewer.shown import ShownAvatar
from savatar.viewer.state import DRIVE_SOURCES, Drive, Playback, Recorder, StageTimings
from savatar.viewer.workers import Jobs

if TYPE_CHECKING:
    from savatar.drive.sources import VideoSource

LIVE_SOURCES = ("webcam", "microphone", "audio file")
Params = tuple[np.ndarray, np.ndarray, np.ndarray]  # expression, pose, translation


def fit_quality_line(frame) -> str:
    """The HUD's line on a tracked frame (DriveFrame or None): the fit's residual, the neutral
    being measured, and warnings (face too small, turned, dark); "" for sources without a fit."""
    residual = getattr(frame, "residual_px", float("nan"))
    if frame is None or not np.isfinite(residual):
        return ""
    text = f"\nfit residual {residual:.1f} px"
    if frame.neutral == "measuring":
        text += "   measuring the neutral face"
    if frame.warnings:
        text += "\n" + "; ".join(frame.warnings)
    return text


class DriveView(Protocol):
    def set_values(self, expr: np.ndarray, pose: np.ndarray, translation: np.ndarray) -> None: ...


class Driving:
    """drive: the slider targets, strength, smoothing and source; playback: the loaded motion;
    recorder; live: the running live source or None."""

    def __init__(self, shown: ShownAvatar, log: Log, jobs: Jobs, view: DriveView):
        self.shown, self.log, self.jobs, self.view = shown, log, jobs, view
        self.drive = Drive.neutral(shown.rig.model.num_expr)
        self.playback = Playback()
        self.recorder = Recorder()
        self.live = None
        self.last_recording: Motion | None = None
        shown.on_swap(self._avatar_swapped)

    def _avatar_swapped(self, rig: Rig, path: str | None) -> None:
        """The new avatar keeps being driven the same way, from neutral sliders."""
        old = self.drive
        self.drive = Drive.neutral(rig.model.num_expr)
        self.drive.source, self.drive.strength, self.drive.smoothing = old.source, old.strength, old.smoothing
        if self.playback.motion is not None:
            self.playback.motion = self.playback.motion.remap(rig.data.expr_names)
        self.view.set_values(self.drive.expr, self.drive.pose, self.drive.translation)

    def step(self, dt: float, timings: StageTimings) -> Params:
        """One frame: playback advanced, the newest live frame taken (its latencies to timings),
        smoothing applied, the result recorded."""
        self.playback.advance(dt)
        target = None
        if self.drive.source == "motion file":
            target = self.playback.frame()
        elif self.drive.source in LIVE_SOURCES and self.live is not None:
            f = self.live.latest()
            if f is not None:
                target = (f.expr, f.pose, f.translation)
                for name, ms in f.timings.items():
                    timings.record(name, ms)
        params = self.drive.step(target)
        self.recorder.add(dt, params)
        return params

    # ------------------------------------------------------------------ sliders and settings
    def set_expr(self, index: int, value: float) -> None:
        self.drive.expr[index] = value
        self.drive.source = "sliders"

    def set_pose(self, index: int, value: float) -> None:
        self.drive.pose[index] = value
        self.drive.source = "sliders"

    def set_translation(self, index: int, value: float) -> None:
        self.drive.translation[index] = value

    def reset(self) -> None:
        self.drive.reset()
        self.view.set_values(self.drive.expr, self.drive.pose, self.drive.translation)

    def set_strength(self, strength: float) -> None:
        self.drive.strength = strength

    def set_smoothing(self, smoothing: float) -> None:
        self.drive.smoothing = smoothing

    def set_loop(self, loop: bool) -> None:
        self.playback.loop = loop

    def set_speed(self, speed: float) -> None:
        self.playback.speed = speed

    # ------------------------------------------------------------------ motion
    def load_motion(self, path: str) -> None:
        def done(motion: Motion) -> None:
            self.play(motion, Path(path).name)
            self.log.info(f"loaded motion {path}: {len(motion)} frames at {motion.fps:g} fps")

        self.jobs.submit("motion", lambda: load_motion(path), done,
                         lambda e: self.log.error(f"cannot load motion: {e}"))

    def play(self, motion: Motion, name: str) -> None:
        """Play motion (its expressions matched to the shown avatar's by name) from the start."""
        self.playback.load(motion.remap(self.shown.rig.data.expr_names), name)
        self.drive.source = "motion file"

    def toggle_play(self) -> None:
        if self.playback.motion is None:
            self.log.warning("load a motion file first")
            return
        self.playback.playing = not self.playback.playing
        if self.playback.playing:
            self.drive.source = "motion file"

    def seek(self, fraction: float) -> None:
        self.playback.seek(fraction)

    def toggle_record(self) -> None:
        if self.recorder.recording:
            self.last_recording = self.recorder.stop(self.shown.rig.data.expr_names)
            n = len(self.last_recording) if self.last_recording else 0
            self.log.info(f"recorded {n} frames: save them from the Motion panel")
        else:
            self.recorder.start()
            self.log.info("recording")

    def save_recording(self, path: str) -> None:
        motion = self.last_recording
        if motion is None:
            self.log.warning("nothing recorded yet")
            return
        self.jobs.submit("save-motion", lambda: save_motion(motion, path),
                         lambda _: self.log.info(f"saved {len(motion)} frames to {path}"),
                         lambda e: self.log.error(f"cannot save {path}: {e}"))

    # ------------------------------------------------------------------ sources
    def set_source(self, source: str, device: str = "0", audio_path: str = "") -> None:
        """device: the webcam's index or a video file (for "webcam"); audio_path: for "audio file"."""
        self.stop_live()
        if source in LIVE_SOURCES:
            self._start_live(source, device, audio_path)
            return
        if source == "motion file" and self.playback.motion is None:
            self.log.warning("load a motion file first")
            source = "sliders"
        self.drive.source = source if source in DRIVE_SOURCES else "sliders"

    def _start_live(self, source: str, device: str, audio_path: str) -> None:
        """Open the webcam/video, microphone or audio file on a worker (that can take a while),
        then drive from it; a failure is logged and the sliders stay in charge."""
        from savatar.drive.sources import AudioFileSource, MicrophoneSource, VideoSource

        data = self.shown.rig.data
        if source == "webcam":
            dev = device.strip() or "0"
            live = VideoSource(data, int(dev) if dev.isdigit() else dev)
        elif source == "microphone":
            live = MicrophoneSource(data)
        else:
            if not audio_path:
                self.log.warning("choose an audio file first (Audio file... in the Drive panel)")
                self.drive.source = "sliders"
                return
            live = AudioFileSource(data, audio_path)
        self.drive.source = "sliders"
        self.log.info(f"starting {source} ...")

        def started(_) -> None:
            self.live = live
            self.drive.source = source
            self.log.info(f"driving from {live.status()}")

        def failed(exc: BaseException) -> None:
            self.log.error(f"cannot drive from {source}: {exc}")
            self.drive.source = "sliders"

        self.jobs.submit(f"start-{source}", live.start, started, failed)

    def set_neutral(self) -> None:
        """The webcam's or video's face over the next second becomes the avatar's rest face."""
        source = self.video_source()
        if source is None:
            self.log.warning("the neutral face is taken from a webcam or video: drive from one first")
            return
        source.request_neutral()
        self.log.info("hold a resting face: measuring the neutral for one second")

    def live_status(self) -> str:
        """The live source's status line while it drives, else ""."""
        return self.live.status() if self.live is not None and self.drive.source in LIVE_SOURCES else ""

    def video_source(self) -> VideoSource | None:
        """The webcam or video file while it drives, else None."""
        return self.live if self.drive.source == "webcam" else None

    def stop_live(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

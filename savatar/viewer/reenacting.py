"""Recording a live video source as `savatar reenact --side-by-side` shows a clip: real frame |
avatar | per-pixel error, the avatar drawn in the tracker's camera at the frame's own size. The
main loop renders (GL) and writes each new tracked frame; the file appears when recording stops."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from savatar.core.gaussians.gaussians import WorldGaussians
from savatar.core.io.video_file import VideoWriter
from savatar.core.reenact.reenact import ReenactedFrame, side_by_side
from savatar.core.reenact.scores import FrameScores
from savatar.core.render.camera import Camera
from savatar.drive.sources import DriveFrame, VideoSource
from savatar.gl.splat_renderer import SplatImage
from savatar.viewer.driving import Driving
from savatar.viewer.log import Log
from savatar.viewer.shown import ShownAvatar

BACKGROUND = (1.0, 1.0, 1.0)  # savatar reenact's default


class OffscreenRenderer(Protocol):
    def render_offscreen(self, g: WorldGaussians, camera: Camera, background=BACKGROUND) -> SplatImage: ...


class SideBySideRecorder:
    """Records while the video source it started with drives; stops when another source takes
    over, on stop() and on quit. stage: renders on the main thread (viewer.stage.Stage)."""

    def __init__(self, shown: ShownAvatar, driving: Driving, log: Log, stage: OffscreenRenderer):
        self.shown, self.driving, self.log, self.stage = shown, driving, log, stage
        self.path: Path | None = None
        self.frames = 0
        self._source: VideoSource | None = None
        self._writer: VideoWriter | None = None
        self._last: DriveFrame | None = None
        self._size = (0, 0)  # the video's frame size (one third of its width)

    @property
    def recording(self) -> bool:
        return self._source is not None

    @property
    def status(self) -> str:
        if self.path is None:
            return ""
        return f"{'recording ' if self.recording else ''}{self.path.name}: {self.frames} frames written"

    def start(self, path: str) -> None:
        source = self.driving.video_source()
        if source is None:
            self.log.warning("record side-by-side: drive from a webcam or video file first")
            return
        self.stop()
        # The frame shown now is not new: recording starts with the next one tracked.
        self.path, self.frames, self._source, self._last = Path(path), 0, source, source.latest()
        self.log.info(f"recording side-by-side to {path}")

    def step(self) -> None:
        """Main thread, once per loop turn: the newest tracked frame, if new, drawn and written."""
        if self._source is None:
            return
        if self.driving.video_source() is not self._source:
            self.stop()
            return
        frame = self._source.latest()
        if frame is None or frame is self._last or frame.image is None:
            return
        self._last = frame
        try:
            self._write(frame)
        except Exception as exc:  # reported; the viewer keeps running
            self.log.error(f"side-by-side {self.path}: {exc}")
            self.stop()

    def _write(self, frame: DriveFrame) -> None:
        image = frame.image
        size = (image.camera.width, image.camera.height)
        if self._writer is None:
            self._writer, self._size = VideoWriter(self.path, self._source.fps, 3 * size[0], size[1]), size
        elif size != self._size:  # a video keeps one frame size
            raise ValueError(f"the frame size changed from {self._size[0]}x{self._size[1]} to {size[0]}x{size[1]}")
        # The frame's own tracked parameters, not the stage's (strength-scaled, smoothed, relative
        # translation): the avatar as the tracker saw this face, where it saw it.
        drawn = self.stage.render_offscreen(self.shown.rig.world(frame.expr, frame.pose, image.translation),
                                            image.camera, BACKGROUND)
        # No head mask (a person segmentation per frame costs more than the render): the error
        # panel shows the whole frame's error.
        scores = FrameScores(self.frames, face=frame.status == "ok")  # not scored live
        shown = ReenactedFrame(self.frames, image.rgb, drawn.rgb, drawn.alpha[..., 0], None, scores)
        self._writer.write(side_by_side(shown))
        self.frames += 1

    def stop(self) -> None:
        """Stop recording: the video appears at its path (with no frame written, nothing does)."""
        if self._source is None:
            return
        writer, self._writer, self._source, self._last = self._writer, None, None, None
        if writer is None:
            self.log.warning(f"side-by-side {self.path}: no frame recorded, nothing written")
            return
        try:
            writer.close()
            self.log.info(f"recorded {writer.frames} side-by-side frames to {self.path}")
        except Exception as exc:  # the disk may be full or gone
            writer.abort()
            self.log.error(f"cannot write {self.path}: {exc}")

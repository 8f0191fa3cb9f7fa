"""Writing videos atomically: frames go to a hidden temp file beside the target, which is
renamed over it only when the video is complete."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoFileError(OSError):
    """OpenCV cannot write this format here."""


class VideoWriter:
    """write(rgb (H, W, 3) uint8) frame by frame, then close(); abort() drops the temp file.
    .mp4 is encoded as MPEG-4 part 2, .avi as MJPG (both built into OpenCV's wheels)."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int):
        import cv2

        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.part{self.path.suffix}")
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
        self._writer = cv2.VideoWriter(str(self.tmp), fourcc, float(fps), (width, height))
        if not self._writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise VideoFileError(f"{self.path}: OpenCV cannot write this video format here")
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        self._writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames += 1

    def close(self) -> None:
        self._writer.release()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        self._writer.release()
        self.tmp.unlink(missing_ok=True)

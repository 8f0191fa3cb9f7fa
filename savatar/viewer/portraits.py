"""Portraits queued for Build: checked on a worker (decode, face, size, sharpness) and shown
with a thumbnail that has the detected landmarks drawn on it. A queued portrait is a file, or a
frame chosen from a dropped video (its pixels kept, labelled "clip.mp4 frame N")."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREVIEW = 96


@dataclass
class Portrait:
    """path: the image file, or the video a frame came from; status line; ok; preview
    (PREVIEW, PREVIEW, 4) float32 RGBA for the console; frame: the frame's index in that video
    and image its pixels (H, W, 3) RGB uint8, None for a file."""

    path: str
    status: str
    ok: bool
    preview: np.ndarray
    frame: int | None = None
    image: np.ndarray | None = None

    @property
    def label(self) -> str:
        """How the Build panel, the log and the built avatar's sources name it."""
        name = Path(self.path).name
        return name if self.frame is None else f"{name} frame {self.frame}"

    @property
    def key(self) -> str:
        """Unique per queued item (several frames share one video's path)."""
        return self.path if self.frame is None else f"{self.path}#{self.frame}"

    @property
    def source(self) -> str | np.ndarray:
        """What the build reads: the file, or the frame's pixels."""
        return self.path if self.image is None else self.image


def _preview(result) -> np.ndarray:
    """A SourceResult's image with its landmarks in green, letterboxed to PREVIEW pixels."""
    import cv2

    preview = np.full((PREVIEW, PREVIEW, 4), 0.35, np.float32)
    preview[..., 3] = 1.0
    if result.image is not None:
        img = result.image
        h, w = img.shape[:2]
        s = PREVIEW / max(h, w)
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        if result.landmarks is not None:
            for x, y in result.landmarks[:468, :2] * s:
                cv2.circle(small, (int(x), int(y)), 0, (0.2, 1.0, 0.3), -1)
        y0, x0 = (PREVIEW - small.shape[0]) // 2, (PREVIEW - small.shape[1]) // 2
        preview[y0:y0 + small.shape[0], x0:x0 + small.shape[1], :3] = small
    return preview


def check_portrait(path: str) -> Portrait:
    """Runs on a worker thread: MediaPipe and image decoding, no GUI."""
    from savatar.core.build.build import check_sources
    from savatar.core.drive.face_landmarks import FaceLandmarker

    with FaceLandmarker() as landmarker:
        (result,), _ = check_sources([path], landmarker)
    return Portrait(path, result.line() if result.name else Path(path).name, result.ok, _preview(result))


def check_video_frames(path: str, frames: dict[int, np.ndarray]) -> list[Portrait]:
    """Runs on a worker thread: frames (index -> (H, W, 3) RGB uint8) of the video at path
    checked as the build will check them, one Portrait each, in the given order."""
    from savatar.core.build.build import check_sources
    from savatar.core.drive.face_landmarks import FaceLandmarker

    indices = list(frames)
    with FaceLandmarker(static_images=True) as landmarker:
        results, _ = check_sources([frames[i] for i in indices], landmarker)
    out = []
    for i, r in zip(indices, results):
        p = Portrait(path, "", r.ok, _preview(r), frame=i, image=frames[i])
        r.name = p.label
        p.status = r.line()
        out.append(p)
    return out

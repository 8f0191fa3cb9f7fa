"""Portraits queued for Build: checked on a worker (decode, face, size, sharpness) and shown
with a thumbnail that has the detected landmarks drawn on it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREVIEW = 96


@dataclass
class Portrait:
    """path; status line; ok; preview (PREVIEW, PREVIEW, 4) float32 RGBA for the console."""

    path: str
    status: str
    ok: bool
    preview: np.ndarray


def check_portrait(path: str) -> Portrait:
    """Runs on a worker thread: MediaPipe and image decoding, no GUI."""
    import cv2

    from savatar.core.build.build import check_sources
    from savatar.core.drive.face_landmarks import FaceLandmarker

    with FaceLandmarker() as landmarker:
        (result,), _ = check_sources([path], landmarker)
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
    return Portrait(path, result.line() if result.name else Path(path).name, result.ok, preview)

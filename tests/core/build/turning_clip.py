"""A synthetic selfie clip for choosing source frames: the default avatar turning its head from
-38 to +38 degrees of yaw in front of the tracking camera (rendered with the CPU rasterizer),
where the widest turns and some frontal and half-turned moments are spoiled: blurred (a
Gaussian blur), or with the eyes closed. The avatar's own eyeBlink is too subtle for MediaPipe at
this size (it still reads the eyes as open), so closed eyes are painted: each eye's landmark
outline filled with the skin just below it, a dark lash line across (painting also makes those
frames the sharpest of their view). A chooser that ignored quality would take spoiled frames:
the blurred ones are the farthest turns, the closed-eye ones the most frontal and the sharpest
view at +-20 degrees."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from savatar.core.drive.tracking import TRACKING_VIEWMAT, intrinsics_for
from savatar.core.build.default_avatar import default_avatar
from savatar.core.gaussians.rig import Rig
from savatar.core.io.pixels import to_uint8
from savatar.core.io.video_file import VideoWriter
from savatar.core.render.api import render

W, H = 320, 240
BACKGROUND = (0.35, 0.45, 0.55)
DISTANCE = 0.30  # metres: the face ~150 px tall, above the build's 80 px floor
BLUR_SIGMA = 2.0  # pixels
# (yaw in degrees, spoiled as) in time order.
SCRIPT = [(0, ""), (-10, ""), (-20, ""), (-30, ""), (-38, "blurred"), (0, "blink"), (0, "blurred"),
          (10, ""), (20, ""), (20, "blink"), (30, ""), (38, "blurred"), (-20, "blink")]


@dataclass
class TurningClip:
    path: Path
    yaw: list[float]  # per frame, degrees (positive: towards the subject's left)
    spoiled: dict[int, str]  # frame -> "blurred" | "blink"
    frames: list[np.ndarray]  # (H, W, 3) uint8 as written


def _closed_eyes(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    import mediapipe as mp

    conn = mp.solutions.face_mesh_connections
    out = image.copy()
    for eye in (conn.FACEMESH_LEFT_EYE, conn.FACEMESH_RIGHT_EYE):
        pts = landmarks[sorted({i for e in eye for i in e}), :2]
        centre, (w, h) = pts.mean(0), np.ptp(pts, 0)
        below = int(round(centre[1] + 0.7 * w))
        skin = image[below - 1:below + 2, int(centre[0]) - 2:int(centre[0]) + 3].reshape(-1, 3).mean(0)
        c = (int(round(centre[0])), int(round(centre[1])))
        cv2.ellipse(out, c, (int(0.75 * w) + 2, int(2 * h) + 4), 0, 0, 360, tuple(int(x) for x in skin), -1)
        cv2.line(out, (int(c[0] - w / 2), c[1]), (int(c[0] + w / 2), c[1]), (40, 30, 30), 1)
    return out


def render_turning_clip(path: Path) -> TurningClip:
    from savatar.core.drive.face_landmarks import FaceLandmarker

    rig = Rig.of(default_avatar())
    e = np.zeros(len(rig.data.expr_names), np.float32)
    K = torch.tensor(intrinsics_for(W, H, 50.0), dtype=torch.float32)
    vm = torch.tensor(TRACKING_VIEWMAT, dtype=torch.float32)
    bg = torch.tensor(BACKGROUND, dtype=torch.float32)
    cache: dict[float, np.ndarray] = {}
    frames, spoiled = [], {}
    with FaceLandmarker(static_images=True) as landmarker:
        for t, (yaw, spoil) in enumerate(SCRIPT):
            if yaw not in cache:
                pose = np.zeros(15, np.float32)
                pose[1] = math.radians(yaw)  # root about the vertical axis
                with torch.no_grad():
                    rgb = render(rig.world(e, pose, np.array([0.0, 0.0, -DISTANCE], np.float32)), vm, K, W, H, bg,
                                 backend="cpu").rgb.numpy()
                cache[yaw] = to_uint8(rgb)
            frame = cache[yaw]
            if spoil == "blurred":
                frame = cv2.GaussianBlur(frame, (0, 0), BLUR_SIGMA)
            elif spoil == "blink":
                frame = _closed_eyes(frame, landmarker(frame))
            if spoil:
                spoiled[t] = spoil
            frames.append(frame)
    writer = VideoWriter(path, 10, W, H)
    for f in frames:
        writer.write(f)
    writer.close()
    return TurningClip(path, [float(y) for y, _ in SCRIPT], spoiled, frames)

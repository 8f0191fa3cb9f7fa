"""The stage camera: orbit around a target, pan, zoom, frame the face."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from savatar.core.render.camera import Camera, orbit_camera

FACE_TARGET = (0.0, -0.03, -0.01)


@dataclass
class Orbit:
    """Yaw/pitch in degrees around target (metres); distance in metres; vertical fov in degrees."""

    yaw: float = 0.0
    pitch: float = 0.0
    distance: float = 0.75
    target: list[float] = field(default_factory=lambda: list(FACE_TARGET))
    fov: float = 30.0

    def camera(self, width: int, height: int) -> Camera:
        return orbit_camera(self.yaw, self.pitch, self.distance, tuple(self.target), width, height, self.fov)

    def rotate(self, dx_px: float, dy_px: float) -> None:
        """Mouse drag in pixels: right turns the head to its left, up looks from above."""
        self.yaw = (self.yaw - 0.4 * dx_px + 180.0) % 360.0 - 180.0
        self.pitch = float(np.clip(self.pitch - 0.4 * dy_px, -85.0, 85.0))

    def pan(self, dx_px: float, dy_px: float, height_px: int) -> None:
        """Move the target in the image plane so the point under the mouse follows it."""
        cam = self.camera(height_px, height_px)
        metres_per_px = 2 * self.distance * math.tan(math.radians(self.fov) / 2) / height_px
        right, down = cam.viewmat[0, :3], cam.viewmat[1, :3]
        delta = (-dx_px * right + dy_px * down) * metres_per_px
        self.target = [float(t + d) for t, d in zip(self.target, delta)]

    def zoom(self, steps: float) -> None:
        self.distance = float(np.clip(self.distance * 0.9 ** steps, 0.15, 5.0))

    def frame(self, points: np.ndarray) -> None:
        """Aim at points (N, 3) and back off until they fill about 80% of the view."""
        lo, hi = points.min(0), points.max(0)
        self.target = [float(x) for x in 0.5 * (lo + hi)]
        radius = 0.5 * float(np.linalg.norm(hi - lo))
        self.distance = float(np.clip(radius / math.tan(math.radians(self.fov) / 2) / 0.8, 0.15, 5.0))

    def reset(self) -> None:
        self.__init__(fov=self.fov)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Orbit":
        o = cls()
        for k in ("yaw", "pitch", "distance", "fov"):
            if isinstance(d.get(k), (int, float)) and math.isfinite(d[k]):
                setattr(o, k, float(d[k]))
        t = d.get("target")
        if isinstance(t, list) and len(t) == 3 and all(isinstance(x, (int, float)) for x in t):
            o.target = [float(x) for x in t]
        return o

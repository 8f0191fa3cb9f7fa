"""Pinhole cameras in the OpenCV convention (docs/conventions.md): viewmat is world-to-camera 4x4 with
x right, y down, z forward; K is 3x3 in pixels."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


# The vertical field of view assumed for a real camera whose own is unknown: most laptop and
# phone front cameras. Building, tracking and refining from real pictures all assume the same one:
# an avatar built under one field of view and driven under another is seen at the wrong depth, and
# its hair volume, behind the face, projects narrower or wider than the person's.
REAL_FOV_Y_DEG = 50.0


@dataclass
class Camera:
    """viewmat: (4, 4) world-to-camera; K: (3, 3) intrinsics; width, height in pixels."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        r, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -r.T @ t


def scaled_camera(camera: Camera, scale: float) -> Camera:
    """The same view at scale times the resolution (at least 16 x 16 pixels)."""
    w, h = max(16, round(camera.width * scale)), max(16, round(camera.height * scale))
    k = camera.K.copy()
    k[0] *= w / camera.width
    k[1] *= h / camera.height
    return Camera(camera.viewmat, k, w, h)


def intrinsics_from_fov(width: int, height: int, fov_y_deg: float) -> np.ndarray:
    """K (3, 3) for a vertical field of view, square pixels, principal point at the centre."""
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """World-to-camera (4, 4) for a camera at eye looking at target, world y up -> image y down."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-8:  # looking straight along up: pick any perpendicular
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, :3] = np.stack([x, y, z])
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def orbit_camera(yaw_deg: float = 0.0, pitch_deg: float = 0.0, distance: float = 0.6,
                 target=(0.0, 0.0, 0.0), width: int = 512, height: int = 512,
                 fov_y_deg: float = 30.0) -> Camera:
    """Camera on a sphere around target; yaw 0 looks at the face from +z, positive yaw moves the
    camera towards +x (the head's left side), positive pitch moves it up."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    offset = distance * np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    target = np.asarray(target, dtype=np.float64)
    return Camera(look_at(target + offset, target), intrinsics_from_fov(width, height, fov_y_deg), width, height)


GL_NEAR, GL_FAR = 0.01, 100.0  # clip range of every GL drawing (metres)


def gl_projection(K: np.ndarray, width: int, height: int, near: float = GL_NEAR, far: float = GL_FAR) -> np.ndarray:
    """OpenGL clip matrix (4, 4) for OpenCV intrinsics, applied to OpenCV camera coordinates.

    Camera z forward becomes positive w and image row 0 becomes NDC y = +1 (the top), so pixels
    read back with glReadPixels (bottom row first) are flipped vertically to give the image.
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    p = np.zeros((4, 4))
    p[0, 0] = 2 * fx / width
    p[0, 2] = 2 * cx / width - 1
    p[1, 1] = -2 * fy / height
    p[1, 2] = 1 - 2 * cy / height
    p[2, 2] = (far + near) / (far - near)
    p[2, 3] = -2 * far * near / (far - near)
    p[3, 2] = 1
    return p

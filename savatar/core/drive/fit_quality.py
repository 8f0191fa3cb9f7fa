"""Is a frame good enough to track? Warnings for a face too small, too turned or too dark for a
good fit, and a fit whose residual is large for the face's size.

The limits are where the fit was seen to go wrong: below about 40 px between the eye centres
MediaPipe's lid and lip landmarks jitter by a large part of their motion; beyond about 35
degrees of yaw the far side's landmarks slide along the silhouette; under about 60 of 255 mean
brightness on the face MediaPipe's contours lose the lids and brows.
"""
from __future__ import annotations

import math

import numpy as np

MIN_EYE_DISTANCE_PX = 40.0
MAX_TURN_DEG = 35.0
MIN_BRIGHTNESS = 60.0  # mean of the face box, 8-bit luma
MAX_RESIDUAL_IOD = 0.06  # RMS reprojection error over the eye distance

# MediaPipe Face Mesh eye corners (subject's right eye outer/inner, left eye outer/inner).
_EYES = ((33, 133), (263, 362))


def eye_distance(points: np.ndarray) -> float:
    """Distance between the eye centres of (478, 2+) MediaPipe landmarks, pixels."""
    p = np.asarray(points, np.float64)[:, :2]
    right, left = p[list(_EYES[0])].mean(0), p[list(_EYES[1])].mean(0)
    return float(np.linalg.norm(left - right))


def brightness(image: np.ndarray, points: np.ndarray) -> float:
    """Mean 8-bit luma of image (H, W, 3) uint8 RGB inside the box of points (L, 2+), sampled
    every 4th pixel (cheap enough for every live frame)."""
    p = np.asarray(points, np.float64)[:, :2]
    h, w = image.shape[:2]
    x0, y0 = np.clip(np.floor(p.min(0)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(p.max(0)).astype(int) + 1, 1, [w, h])
    crop = image[y0:y1:4, x0:x1:4, :3].astype(np.float32)
    if crop.size == 0:
        return 0.0
    if image.dtype != np.uint8:
        crop = crop * 255.0
    return float((crop @ np.array([0.299, 0.587, 0.114], np.float32)).mean())


def fit_warnings(points: np.ndarray, root: np.ndarray, residual_px: float,
                 image: np.ndarray | None = None) -> list[str]:
    """Short warnings for one tracked frame: points (478, 2+) MediaPipe landmarks in pixels,
    root (3,) the fitted head rotation (axis-angle, tracking world, 0 = facing the camera),
    residual_px the fit's RMS error, image (H, W, 3) the frame (brightness is checked when given)."""
    out = []
    iod = eye_distance(points)
    if iod < MIN_EYE_DISTANCE_PX:
        out.append(f"face too small ({iod:.0f} px between the eyes, want {MIN_EYE_DISTANCE_PX:.0f})")
    turn = math.degrees(float(np.linalg.norm(np.asarray(root, np.float64)[:3])))
    if turn > MAX_TURN_DEG:
        out.append(f"face too turned ({turn:.0f} degrees)")
    if image is not None:
        light = brightness(image, points)
        if light < MIN_BRIGHTNESS:
            out.append(f"face too dark (brightness {light:.0f} of 255)")
    if math.isfinite(residual_px) and iod > 0 and residual_px > MAX_RESIDUAL_IOD * iod:
        out.append(f"poor fit (residual {residual_px:.1f} px)")
    return out

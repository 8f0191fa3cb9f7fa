"""Expression and pose signals read off MediaPipe Face Mesh landmarks, the same way on a real
frame and on a render, so the two can be compared (correlated over a clip).

Distances are normalised by the inter-ocular distance (between the eye centres), so the signals
do not depend on the image size or on how far the face is from the camera. Landmarks are image
pixels (x right, y down), (L, 2+) with L >= 468 (MediaPipe's order; the subject's right eye is on
the image's left).
"""
from __future__ import annotations

import math

import numpy as np

SIGNALS = ("mouth_open", "mouth_width", "eye_open", "brow_height", "head_yaw", "head_roll")

# MediaPipe Face Mesh indices.
UPPER_LIP, LOWER_LIP = 13, 14  # inner lip midpoints
MOUTH_CORNERS = (61, 291)
RIGHT_EYE = (33, 133, 159, 145)  # outer corner, inner corner, upper lid, lower lid
LEFT_EYE = (263, 362, 386, 374)
RIGHT_BROW, LEFT_BROW = (70, 63, 105, 66, 107), (300, 293, 334, 296, 336)  # upper brow lines
NOSE_TIP = 1
CHEEKS = (234, 454)  # the face oval's widest points, subject's right then left


def _eye_centre(lm: np.ndarray, eye: tuple[int, int, int, int]) -> np.ndarray:
    return lm[list(eye[:2]), :2].mean(0)


def inter_ocular(lm: np.ndarray) -> float:
    """Distance between the eye centres (mean of each eye's corners), pixels."""
    return float(np.linalg.norm(_eye_centre(lm, LEFT_EYE) - _eye_centre(lm, RIGHT_EYE)))


def face_signals(lm: np.ndarray) -> dict[str, float]:
    """The six signals of one face: mouth opening (inner lips), mouth width (corners), eye
    opening (lids, mean of both eyes), brow height (upper brow line above the eye centre, mean of
    both) as fractions of the inter-ocular distance; head yaw (where the nose tip sits between
    the cheeks, -1..1, positive towards the subject's left) and roll (degrees of the eye line,
    positive clockwise in the image)."""
    p = np.asarray(lm, np.float64)[:, :2]
    iod = max(inter_ocular(p), 1e-6)
    dist = lambda a, b: float(np.linalg.norm(p[a] - p[b]))  # noqa: E731
    eye_open = (dist(RIGHT_EYE[2], RIGHT_EYE[3]) + dist(LEFT_EYE[2], LEFT_EYE[3])) / 2
    brow = 0.0
    for brow_idx, eye in ((RIGHT_BROW, RIGHT_EYE), (LEFT_BROW, LEFT_EYE)):
        brow += float(np.linalg.norm(p[list(brow_idx)].mean(0) - _eye_centre(p, eye))) / 2
    right, left = p[CHEEKS[0], 0], p[CHEEKS[1], 0]
    width = left - right
    yaw = (2 * (p[NOSE_TIP, 0] - right) / width - 1) if abs(width) > 1e-6 else 0.0
    d = _eye_centre(p, LEFT_EYE) - _eye_centre(p, RIGHT_EYE)
    return {"mouth_open": dist(UPPER_LIP, LOWER_LIP) / iod,
            "mouth_width": dist(*MOUTH_CORNERS) / iod,
            "eye_open": eye_open / iod,
            "brow_height": brow / iod,
            "head_yaw": float(yaw),
            "head_roll": math.degrees(math.atan2(d[1], d[0]))}


def landmark_distance(real: np.ndarray, other: np.ndarray) -> float:
    """Mean 2D distance between the 468 face-mesh landmarks of two faces, as a fraction of the
    first face's inter-ocular distance."""
    a, b = np.asarray(real, np.float64)[:468, :2], np.asarray(other, np.float64)[:468, :2]
    return float(np.linalg.norm(a - b, axis=1).mean() / max(inter_ocular(a), 1e-6))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two signals over a clip; NaN with fewer than three samples or when
    either is constant (a signal that never moves says nothing about following it)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def amplitude(real: np.ndarray, render: np.ndarray) -> float:
    """How far the render's signal moves for the real one's motion: the least-squares slope of
    render on real over a clip (1: a grin as wide as the person's; 0.3: the avatar shows a third
    of it). Correlation says whether the avatar follows, this says how much. NaN where the
    correlation is."""
    a, b = np.asarray(real, np.float64), np.asarray(render, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    a = a - a.mean()
    return float(a @ (b - b.mean()) / (a @ a))

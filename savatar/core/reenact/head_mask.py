"""The head mask of a real frame, for scoring an avatar against it.

It comes from the real frame alone, never from the avatar (a score must not grade itself): the
person segmentation of the frame (MediaPipe selfie segmentation, probability > 0.5), so hair,
hats and ears count, cut by a straight line across the neck CHIN_MARGIN face lengths below the
chin (perpendicular to the face's chin-to-forehead axis, so a tilted head is cut straight), so
the neck, shoulders and body, which an avatar of a head does not draw, do not.
"""
from __future__ import annotations

import numpy as np

CHIN, FOREHEAD = 152, 10  # MediaPipe Face Mesh: chin tip, top of the forehead (hairline)
CHIN_MARGIN = 0.15  # below the chin, in units of the forehead-to-chin length


def head_mask(person: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """person: (H, W) person probability in [0, 1]; landmarks: (L, 2+) face-mesh pixels of the
    same frame. Returns (H, W) bool: the person above a line CHIN_MARGIN face lengths below the
    chin."""
    h, w = person.shape[:2]
    chin, top = (np.asarray(landmarks, np.float64)[i, :2] for i in (CHIN, FOREHEAD))
    down = chin - top
    length = max(float(np.linalg.norm(down)), 1e-6)
    down /= length
    ys, xs = np.mgrid[0:h, 0:w]
    # Pixel centres at +0.5, as the landmarks.
    below = (xs + 0.5 - chin[0]) * down[0] + (ys + 0.5 - chin[1]) * down[1]
    return (person > 0.5) & (below <= CHIN_MARGIN * length)

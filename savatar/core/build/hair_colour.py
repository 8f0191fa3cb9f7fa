"""The colour of a person's hair (or headwear, or bare scalp) as the portraits show it.

What no source saw of the cranium (the back and top of the head) settles to this colour. The
median of the cranium's lifted colours is a poor estimate: the cranium's front is forehead skin,
and where hair is short its grown silhouette reaches past the person's edge. Here the estimate
comes from the image itself: the rim of the person's outline around the top of the head, above
the eyes and outside the face oval, i.e. what is on top of and beside the head (the temples'
hair shows what a receding or thinning hairline leaves at the back), whatever it is.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

EYE_CORNERS = (33, 263)  # MediaPipe Face Mesh: outer corners of the eyes
MIN_PIXELS = 200  # fewer hair pixels than this over all sources: no estimate
MIN_PERSON = 0.8  # person probability from which a pixel counts
RIM_INNER, RIM_OUTER = 0.03, 0.12  # the rim band, in face widths in from the person's outline


def hair_pixels(image: np.ndarray, landmarks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(M, 3) colours of image (H, W, 3) at the rim of the head above the eyes: person pixels
    (mask (H, W) >= MIN_PERSON) between RIM_INNER and RIM_OUTER face widths in from the
    person's outline, above the eyes' outer corners and outside the face oval grown by a tenth
    of the face's width. The rim is hair (or a hat, or bare scalp) for nearly everyone, where
    the middle of the region above the face oval is often forehead. landmarks: (478, 2+) px."""
    h, w = mask.shape
    pts = np.asarray(landmarks, np.float64)[:, :2]
    face_w = float(np.ptp(pts[:, 0]))
    person = (mask >= MIN_PERSON).astype(np.uint8)
    # Padded so the image border is not an outline: a head cut by the frame has no rim there.
    inward = cv2.distanceTransform(cv2.copyMakeBorder(person, 1, 1, 1, 1, cv2.BORDER_REPLICATE),
                                   cv2.DIST_L2, 5)[1:-1, 1:-1]
    rim = (inward > RIM_INNER * face_w) & (inward < RIM_OUTER * face_w)
    oval = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(oval, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    grow = max(3, int(round(0.1 * face_w)) | 1)
    oval = cv2.dilate(oval, np.ones((grow, grow), np.uint8)) > 0
    above = np.arange(h)[:, None] < pts[list(EYE_CORNERS), 1].mean()
    return image[rim & ~oval & above].reshape(-1, 3)


def hair_colour(sources: Sequence) -> np.ndarray | None:
    """(3,) median colour of the hair pixels of all sources (each with image, landmarks and mask,
    as build's SourceResult), or None where they show too little of the top of the head."""
    pixels = [hair_pixels(s.image, s.landmarks, s.mask) for s in sources]
    pixels = np.concatenate(pixels) if pixels else np.zeros((0, 3))
    if len(pixels) < MIN_PIXELS:
        return None
    return np.median(pixels.astype(np.float64), axis=0)

"""The colour of a person's hair (or headwear, or bare scalp) as the portraits show it.

What no source saw of the cranium (the back and top of the head) settles to this colour. The
median of the cranium's lifted colours is a poor estimate: the cranium's front is forehead skin,
and where hair is short its grown silhouette reaches past the person's edge. Here the estimate
comes from the image itself: pixels of the person, above the top of the face oval and outside
it, i.e. what is on top of the head, whatever it is.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

FOREHEAD_TOP = 10  # MediaPipe Face Mesh: the top of the face oval, mid-forehead
MIN_PIXELS = 200  # fewer hair pixels than this over all sources: no estimate
MIN_PERSON = 0.8  # person probability from which a pixel counts


def hair_pixels(image: np.ndarray, landmarks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(M, 3) colours of image (H, W, 3) on top of the head: person (mask (H, W) >= MIN_PERSON,
    eroded away from its edge), above the face oval's top and outside the oval grown by a tenth
    of the face's width. landmarks: (478, 2+) pixels."""
    h, w = mask.shape
    pts = np.asarray(landmarks, np.float64)[:, :2]
    face_w = float(np.ptp(pts[:, 0]))
    k = max(3, int(round(0.03 * face_w)) | 1)
    person = cv2.erode((mask >= MIN_PERSON).astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    oval = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(oval, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    grow = max(3, int(round(0.1 * face_w)) | 1)
    oval = cv2.dilate(oval, np.ones((grow, grow), np.uint8)) > 0
    above = np.arange(h)[:, None] < pts[FOREHEAD_TOP, 1]
    return image[person & ~oval & above].reshape(-1, 3)


def hair_colour(sources: Sequence) -> np.ndarray | None:
    """(3,) median colour of the hair pixels of all sources (each with image, landmarks and mask,
    as build's SourceResult), or None where they show too little of the top of the head."""
    pixels = [hair_pixels(s.image, s.landmarks, s.mask) for s in sources]
    pixels = np.concatenate(pixels) if pixels else np.zeros((0, 3))
    if len(pixels) < MIN_PIXELS:
        return None
    return np.median(pixels.astype(np.float64), axis=0)

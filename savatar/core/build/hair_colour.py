"""The colour of a person's hair (or headwear, or bare scalp) as the portraits show it.

What no source saw of the cranium (the back and top of the head) settles to this colour. The
median of the cranium's lifted colours is a poor estimate: the cranium's front is forehead skin,
and where hair is short its grown silhouette reaches past the person's edge. Here the estimate
comes from the image itself: the rim of the person's outline around the top of the head, above
the eyes and outside the face oval, i.e. what is on top of and beside the head (the temples'
hair shows what a receding or thinning hairline leaves at the back), whatever it is.

Whether the hair is long (long_hair: hair beside the jaw) says what the back of the neck is: hair
falling past it, or skin under short hair.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

EYE_CORNERS = (33, 263)  # MediaPipe Face Mesh: outer corners of the eyes
JAW_ANGLES = (172, 397)  # the face oval at the jaw's angles
CHIN = 152
MIN_PIXELS = 200  # fewer hair pixels than this over all sources: no estimate
MIN_PERSON = 0.8  # person probability from which a pixel counts
RIM_INNER, RIM_OUTER = 0.03, 0.12  # the rim band, in face widths in from the person's outline
BESIDE_JAW = (0.05, 0.3)  # face widths out from the face's landmarks: where long hair falls beside the jaw
LONG_HAIR = 0.5  # fraction of the person's pixels beside the jaw that are hair, from which hair is long


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


def hair_beside_jaw(image: np.ndarray, landmarks: np.ndarray, mask: np.ndarray,
                    hair: np.ndarray) -> tuple[int, int]:
    """(hair pixels, person pixels) beside the jaw: person pixels (mask >= MIN_PERSON) between
    the jaw's angles and the chin, BESIDE_JAW face widths out from the face on either side, and
    of those the ones nearer the hair colour hair (3,) than the skin's (the face's median below
    the eyes). Long hair falls there; with short hair it is background (not the person), ears
    or the neck's skin. Only pixels that hang from the head count: the person all the way up
    their column to the eyes' height. In a webcam's framing the shoulders reach up beside the
    jaw, and a dark jacket or shirt there, under background, read as long dark hair."""
    h, w = mask.shape
    pts = np.asarray(landmarks, np.float64)[:, :2]
    face_w = float(np.ptp(pts[:, 0]))
    top, bottom = int(pts[list(JAW_ANGLES), 1].mean()), int(pts[CHIN, 1])
    if bottom <= top:
        return 0, 0
    face = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    skin_rows = np.arange(h)[:, None] > pts[list(EYE_CORNERS), 1].mean()
    skin_pixels = image[(face > 0) & skin_rows].reshape(-1, 3)
    if not len(skin_pixels):
        return 0, 0
    skin = np.median(skin_pixels.astype(np.float64), axis=0)
    cols = np.arange(w)
    beside = np.zeros((h, w), bool)
    left, right = pts[:, 0].min(), pts[:, 0].max()
    near, far = BESIDE_JAW[0] * face_w, BESIDE_JAW[1] * face_w
    band = ((cols > left - far) & (cols < left - near)) | ((cols > right + near) & (cols < right + far))
    beside[max(top, 0):min(bottom, h)] = band
    person = mask >= MIN_PERSON
    eyes = max(int(pts[list(EYE_CORNERS), 1].mean()), 0)
    hanging = np.zeros((h, w), bool)
    hanging[eyes:] = np.cumsum(~person[eyes:], axis=0) == 0
    colours = image[beside & hanging].reshape(-1, 3).astype(np.float64)
    nearer_hair = np.linalg.norm(colours - hair, axis=1) < np.linalg.norm(colours - skin, axis=1)
    return int(nearer_hair.sum()), len(colours)


def long_hair(sources: Sequence, hair: np.ndarray | None) -> bool:
    """Whether the portraits (as for hair_colour) show hair falling past the jaw: then the back
    of the neck is hair too, otherwise skin."""
    if hair is None:
        return False
    counts = np.array([hair_beside_jaw(s.image, s.landmarks, s.mask, hair) for s in sources]).sum(0)
    return bool(counts[1] >= MIN_PIXELS and counts[0] >= LONG_HAIR * counts[1])

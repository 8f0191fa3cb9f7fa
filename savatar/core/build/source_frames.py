"""Which frames of a selfie video to build an avatar from (pure numpy).

A clip of someone turning and talking holds hundreds of views of one face; the build
(savatar.core.build.build) wants a handful that together see the head from as many sides as
possible, each sharp, open-eyed and near-neutral (a blink or a wide-open mouth would be painted
onto the resting avatar's colours). Measured per frame (FrameStats, filled by
savatar.core.build.from_video), chosen here:

1. usable frames: a face of at least MIN_FACE_PX, lit (face-box brightness), sharp (the build's
   absolute sharpness floor, and not much blurrier than the clip's usual frames: motion blur is
   relative to what this camera gives), eyes open (against this person's usual opening over the
   clip), mouth near closed (or among the clip's most closed, for someone talking all along) and a head turned no further than the landmarks and the build's colour lifting follow;
2. the first source: the most frontal, sharpest, most neutral usable frame;
3. then greedily the frame farthest in head angle (yaw, pitch) from those chosen, quality worth
   a few degrees, until K are chosen or nothing new adds MIN_SPREAD_DEG of view.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_FACE_PX = 80.0  # as the build's floor (savatar.core.build.build.MIN_FACE_PX)
MIN_SHARPNESS = 30.0  # as the build's floor (variance of the Laplacian of the 128 px face box)
MIN_BRIGHTNESS = 40.0  # mean grey (0..255) of the face box below which a face is too dark to colour from
BLUR_RATIO = 0.5  # a frame below this fraction of the clip's usual sharpness is blurred
# The usual sharpness is the median: most frames of a clip are not motion-blurred, and a high
# percentile would follow the few frames that are sharp for other reasons (glasses, hair, a
# close-up), rejecting ordinary ones.
SHARP_PERCENTILE = 50.0
BLINK_RATIO = 0.6  # eyes below this fraction of the person's usual opening are closing
# The usual opening is the median over the clip: blinks are brief, and a high percentile would
# measure a moment of surprise and then reject every frown.
OPEN_EYE_PERCENTILE = 50.0
MAX_YAW_DEG = 50.0  # beyond this MediaPipe's landmarks (and the colour lifting) degrade
MAX_PITCH_DEG = 35.0
MIN_SPREAD_DEG = 4.0  # a frame closer than this in head angle to a chosen one adds no view
QUALITY_DEG = 6.0  # how many degrees of extra spread a perfect frame is worth over a poor one
FRONTAL_WEIGHT = 1.0 / 20.0  # first source: quality lost per degree away from frontal
MOUTH_OPEN_SCALE = 0.3  # mouth opening (fraction of the inter-ocular distance) counted as fully open
# Mouths open further than this (fraction of the inter-ocular distance) are not near-neutral...
MAX_MOUTH_OPEN = 0.12
# ... unless the person talks all along: then the clip's most closed quarter still counts.
CLOSED_MOUTH_PERCENTILE = 25.0
DEFAULT_SOURCES = 4


@dataclass
class FrameStats:
    """What the choice needs of one tracked frame. index: frame number in the video; yaw, pitch:
    head angles in degrees (0 facing the camera; head_angles); face_px: the landmark box's larger
    side in pixels; sharpness: variance of the Laplacian of the face box at 128 px
    (savatar.core.build.build.face_sharpness); brightness: mean grey 0..255 of the face box;
    eye_open: lid gap over eye width (savatar.core.build.from_video.eye_opening); mouth_open:
    savatar.core.reenact.face_signals' inner-lip gap over the inter-ocular distance."""

    index: int
    yaw: float
    pitch: float
    face_px: float
    sharpness: float
    brightness: float
    eye_open: float
    mouth_open: float


@dataclass
class Choice:
    """chosen: positions in the stats list, in the order chosen (the first is the frontal one);
    rejected: position -> reason for each unusable frame; reason: one line saying why nothing
    could be chosen ("" when something was)."""

    chosen: list[int]
    rejected: dict[int, str]
    reason: str = ""


def head_angles(root: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a head with root rotation root (3,) axis-angle in the tracking
    world (savatar.core.drive.tracking: camera along world -z, y up; 0 faces the camera): the
    direction the face points, +z on the model, rotated. Yaw positive towards the subject's left
    (+x), pitch positive looking up."""
    v = np.asarray(root, np.float64)
    theta = float(np.linalg.norm(v))
    forward = np.array([0.0, 0.0, 1.0])
    if theta > 1e-12:  # Rodrigues' rotation of the forward axis
        k = v / theta
        forward = (forward * math.cos(theta) + np.cross(k, forward) * math.sin(theta)
                   + k * float(k @ forward) * (1 - math.cos(theta)))
    yaw = math.degrees(math.atan2(forward[0], forward[2]))
    pitch = math.degrees(math.atan2(forward[1], math.hypot(forward[0], forward[2])))
    return yaw, pitch


def _quality(stats: list[FrameStats], sharp_ref: float) -> np.ndarray:
    """(N,) in [0, 1]: half sharpness against the clip's sharp frames, half a closed mouth."""
    sharp = np.array([min(1.0, s.sharpness / max(sharp_ref, 1e-9)) for s in stats])
    neutral = np.array([1.0 - min(1.0, max(s.mouth_open, 0.0) / MOUTH_OPEN_SCALE) for s in stats])
    return 0.5 * sharp + 0.5 * neutral


def usable(stats: list[FrameStats]) -> dict[int, str]:
    """Position -> reason for every frame not fit to build from (see the module docstring)."""
    if not stats:
        return {}
    sharpness = np.array([s.sharpness for s in stats])
    eyes = np.array([s.eye_open for s in stats])
    sharp_ref = float(np.percentile(sharpness, SHARP_PERCENTILE))
    eye_ref = float(np.percentile(eyes, OPEN_EYE_PERCENTILE))
    mouth_limit = max(MAX_MOUTH_OPEN, float(np.percentile([s.mouth_open for s in stats], CLOSED_MOUTH_PERCENTILE)))
    rejected: dict[int, str] = {}
    for i, s in enumerate(stats):
        if s.face_px < MIN_FACE_PX:
            rejected[i] = f"face too small ({s.face_px:.0f} px, need {MIN_FACE_PX:.0f})"
        elif s.brightness < MIN_BRIGHTNESS:
            rejected[i] = f"too dark (face brightness {s.brightness:.0f} of 255, need {MIN_BRIGHTNESS:.0f})"
        elif s.sharpness < max(MIN_SHARPNESS, BLUR_RATIO * sharp_ref):
            rejected[i] = f"blurred (sharpness {s.sharpness:.0f}, the clip's usual {sharp_ref:.0f})"
        elif s.eye_open < BLINK_RATIO * eye_ref:
            rejected[i] = "eyes closing"
        elif s.mouth_open > mouth_limit:
            rejected[i] = f"mouth open ({s.mouth_open:.2f} of the eye distance)"
        elif abs(s.yaw) > MAX_YAW_DEG or abs(s.pitch) > MAX_PITCH_DEG:
            rejected[i] = f"head turned too far (yaw {s.yaw:.0f}, pitch {s.pitch:.0f} degrees)"
    return rejected


def choose_sources(stats: list[FrameStats], k: int = DEFAULT_SOURCES) -> Choice:
    """Up to k frames to build from (module docstring). With no usable frame, chosen is empty and
    reason names the most common rejection."""
    if k < 1:
        raise ValueError("k must be >= 1")
    rejected = usable(stats)
    ok = [i for i in range(len(stats)) if i not in rejected]
    if not ok:
        if not stats:
            return Choice([], rejected, "no face found")
        reasons = [r.split(" (")[0] for r in rejected.values()]
        common = max(set(reasons), key=reasons.count)
        example = next(r for r in rejected.values() if r.startswith(common))
        return Choice([], rejected, f"no usable frame: {example}" if len(set(reasons)) == 1
                      else f"no usable frame (most often {example})")
    sharp_ref = float(np.percentile([stats[i].sharpness for i in ok], SHARP_PERCENTILE))
    quality = _quality([stats[i] for i in ok], sharp_ref)
    angles = np.array([[stats[i].yaw, stats[i].pitch] for i in ok])
    off_axis = np.linalg.norm(angles, axis=1)
    first = int(np.argmax(quality - FRONTAL_WEIGHT * off_axis))
    picked = [first]
    nearest = np.linalg.norm(angles - angles[first], axis=1)
    while len(picked) < min(k, len(ok)):
        score = nearest + QUALITY_DEG * quality
        score[picked] = -np.inf
        score[nearest < MIN_SPREAD_DEG] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        picked.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(angles - angles[best], axis=1))
    return Choice([ok[p] for p in picked], rejected)

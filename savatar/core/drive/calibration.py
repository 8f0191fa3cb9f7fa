"""Calibration of the tracker's expression readings against renders of the head model.

The tracker reads a face as the head model's expression coefficients that move the model's
landmarks onto MediaPipe's. A render of the avatar driven with "smile 1.0" does not read as
smile 1.0: the Gaussians, the light baked into them and MediaPipe's own priors make the smile
MediaPipe sees on the render smaller (about half), blinks partial, and so on. So a person's
reading, sent to the avatar as it is, makes a face that reads smaller than the person's.

The response of each component is measured (measure_response): render the avatar at rest and
with one component at a few levels, run MediaPipe on the renders and project the landmark
motion it sees on the model's own: its gain and the level past which renders stop reading as
more (max_drive: a blink beyond about half closes the lids into skin MediaPipe places no lids
on). OPEN_HEAD_RESPONSE holds them for the open head's default avatar.

Beyond one gain per component, the seen basis (measure_seen_offset, savatar/assets/
open_head_seen.npz): per component and for the jaw, the motion of every landmark MediaPipe sees
on the renders, as a change of the head model's landmark motion. The retargeting fit reads
expressions in that basis (LandmarkModel's expr_offset and jaw_offset), so a reading is what the
avatar must be driven with for its renders to show the landmark motion the driver's face showed
(gains 1, the limits still apply). The same file holds the seen rest (measure_seen_rest,
seen_rest): where MediaPipe places the rest face's landmarks, depth included, read from renders
of the head turned; the fit's model carries it under the driver's neutral. All are measured on
renders of the head model only, never on the clips that judge it; scripts/calibrate_tracking.py
measures them again.

The eyelids have their own curve (LidCurve, measure_lid_curve, OPEN_HEAD_LIDS): how open the
avatar's eyes read on renders (MediaPipe's lid gap over the rest render's) along blink 0..1 and
eyeWide past its rest drive. The retargeter reads a driver's eyes as the same fraction of open
and drives the lids by this curve (savatar.core.drive.retarget).

The eyes' turn has one too (GazeResponse, measure_gaze, OPEN_HEAD_GAZE): MediaPipe re-places the
whole face with the irises, so the fit reads the avatar's head turned when only its eyes turn;
the retargeter turns the head back by it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from savatar.core.head.head_model import HeadModelData

JAW = "jaw"  # the jaw opening (pose[6], radians) is calibrated like a component
GAIN_RANGE = (0.5, 4.0)  # components needing more are left alone: it would amplify jitter into grimaces

# Measured by scripts/calibrate_tracking.py on the default avatar: name -> (gain, max_drive).
OPEN_HEAD_RESPONSE: dict[str, tuple[float, float]] = {
    'eyeBlink_L': (1.407, 0.5), 'eyeBlink_R': (1.407, 0.5), 'eyeSquint_L': (1.172, 1.5),
    'eyeSquint_R': (1.172, 1.5), 'eyeWide_L': (2.21, 2.5), 'eyeWide_R': (2.21, 2.5),
    'browInnerUp': (2.159, 2.5), 'browOuterUp_L': (2.621, 2.5), 'browOuterUp_R': (2.621, 2.5),
    'browDown_L': (1.644, 2.5), 'browDown_R': (1.644, 2.5), 'mouthSmile_L': (1.547, 1.5),
    'mouthSmile_R': (1.547, 1.5), 'mouthFrown_L': (1.983, 2.0), 'mouthFrown_R': (1.983, 2.0),
    'mouthStretch_L': (2.037, 2.5), 'mouthStretch_R': (2.037, 2.5), 'mouthPucker': (1.337, 1.5),
    'mouthFunnel': (1.848, 2.5), 'mouthUpperUp_L': (1.288, 2.5), 'mouthUpperUp_R': (1.288, 2.5),
    'mouthLowerDown_L': (2.233, 2.5), 'mouthLowerDown_R': (2.233, 2.5), 'mouthRollUpper': (1.027, 2.5),
    'mouthRollLower': (1.854, 0.75), 'mouthLeft': (1.217, 2.5), 'mouthRight': (1.59, 2.5),
    'mouthDimple_L': (1.046, 2.5), 'mouthDimple_R': (1.046, 2.5), 'cheekPuff': (3.171, 2.5),
    'cheekSquint_L': (3.424, 2.5), 'cheekSquint_R': (3.424, 2.5), 'jawForward': (1.493, 2.5),
    'jaw': (1.343, 0.3)}

# The default avatar's eyes render narrower than the head model's (MediaPipe's lid gap about 9 px
# where the model's is 14.6 px at 0.42 m): the rest face is driven with some eyeWide, so a rest
# face reads as open eyes with room for a blink to close from (blink 0..1 from there reads as a
# steadily closing lid on renders, OPEN_HEAD_LIDS). 1.5 rather than 1.0: on the dev clips the
# head roll MediaPipe reads on the renders follows the person's better with the more open eyes
# (bench puppet roll 0.75/0.84/0.53/0.97 against 0.69/0.75/0.57/0.97, eye opening 0.76/0.81/0.87/0.88
# against 0.69/0.83/0.84/0.83).
OPEN_HEAD_REST: dict[str, float] = {"eyeWide_L": 1.5, "eyeWide_R": 1.5}

# Measured by scripts/calibrate_tracking.py on the default avatar (measure_lid_curve): lid drive
# s (s > 0: eyeBlink s over the rest drive; s < 0: eyeWide rest - s) -> MediaPipe's lid gap
# on the render over the rest render's. Past blink 1 the shut lids' lash line thins (0.37 of the
# open gap read at 1.0, 0.28 at 1.1, where a real shut eye reads about 0.2); from 1.5 they sink in.
OPEN_HEAD_LIDS: tuple[tuple[float, ...], tuple[float, ...]] = (
    (-0.5, 0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2),
    (1.018, 1.0, 0.919, 0.831, 0.812, 0.754, 0.671, 0.569, 0.439, 0.367, 0.281, 0.293))

# Measured by scripts/calibrate_tracking.py on the default avatar (measure_gaze): GazeResponse's
# (levels, head).
OPEN_HEAD_GAZE: tuple[tuple[float, ...], tuple[float, ...]] = (
    (-0.6, -0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4, 0.6),
    (0.0145, 0.009, 0.0028, 0.0026, 0.0, -0.0062, -0.0068, -0.0101, -0.0089))

# Measured by scripts/calibrate_tracking.py on the default avatar (measure_brow_limits): the most
# the brows are driven (lowered, raised), all of BROWS_DOWN or BROWS_UP at one level over the rest
# drive, before their renders stop reading as higher or lower brows. Raised together, the three
# brow components read highest at 1.5 and lower past it (0.454 of the eye distance at 1.5, 0.435
# at 2.5), though each alone reads higher up to 2.5 (OPEN_HEAD_RESPONSE).
OPEN_HEAD_BROW_LIMITS: tuple[float, float] = (2.5, 1.5)
BROW_LEVELS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5)


def _first_near_peak(readings: Sequence[float]) -> int:
    """Position of the first reading (from the rest's, in order of level) within 5 % of the
    largest: past its level, driving harder no longer reads as more."""
    r = np.asarray(readings, np.float64)
    return int(np.argmax(r >= 0.95 * r.max()))


def measure_brow_limits(read: Callable[[float], "float | None"],
                        levels: Sequence[float] = BROW_LEVELS) -> tuple[float, float]:
    """read(level) -> the brow height (brow_height) MediaPipe reads on a render of the avatar
    with its brows driven at level (negative lowered, positive raised; None without a face).
    (lowest, highest) levels worth driving: the first level each way whose change from level 0
    comes within 5 % of the largest change that way."""
    rest = read(0.0)
    if rest is None:
        raise ValueError("no face found on the render at rest")
    limits = []
    for sign in (-1.0, 1.0):
        kept, change = [], []
        for a in levels:
            h = read(sign * a)
            if h is not None:
                kept.append(float(a))
                change.append(sign * (h - rest))
        if not kept or max(change) <= 0:
            raise ValueError("the brows' renders do not read as moving")
        limits.append(kept[_first_near_peak(change)])
    return limits[0], limits[1]


@dataclass
class GazeResponse:
    """How the tracking fit reads the avatar's head when only its eyes turn (measure_gaze):
    MediaPipe re-places the whole face with the irises, nose and cheeks following them, so
    eyes turned by yaw a with the head still read as the head turned head(a) about the vertical
    (radians). levels (K,) ascending gaze yaws, 0 among them; head (K,), 0 at 0.

    A driver's fitted head turn carries the same re-placing of his face by his irises, and the
    avatar's renders add it again for its own eyes: so the avatar's head is turned back by
    head(its gaze). (The fit also reads the avatar's eyes turned about 0.6 of their yaw; driven
    1.6 times further to match, the renders' lid gaps followed the irises and the eye opening
    MediaPipe read on them fell from 0.85 to 0.83 on other people's clips in bench puppet.)"""

    levels: np.ndarray
    head: np.ndarray

    def head_turn(self, yaw: float) -> float:
        """The head turn (radians about the vertical) the fit reads for the avatar's eyes at yaw."""
        return float(np.interp(yaw, self.levels, self.head))


# Gaze yaws (radians) at which measure_gaze renders the avatar.
GAZE_LEVELS = (-0.6, -0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4, 0.6)


def measure_gaze(render: Callable[[float], "np.ndarray | None"], fit: Callable[[np.ndarray], float],
                 levels: Sequence[float] = GAZE_LEVELS) -> GazeResponse:
    """render(yaw) -> MediaPipe's landmarks on a frontal render of the avatar with both eyes
    turned by yaw, head still (None without a face); fit(landmarks) -> the head yaw the tracking
    fit reads from them. Levels without a face are left out."""
    rest = render(0.0)
    if rest is None:
        raise ValueError("no face found on the render at rest")
    head0 = fit(rest)
    kept, head = [], []
    for a in levels:
        lm = render(a)
        if lm is not None:
            kept.append(float(a))
            head.append(fit(lm) - head0)
    return GazeResponse(np.array(kept), np.array(head))


@dataclass
class ExpressionCalibration:
    """gains (E,) and max_drive (E,) per expression component, jaw_gain and max_jaw (radians):
    drive = clip(reading x gain, 0, max_drive)."""

    gains: np.ndarray
    max_drive: np.ndarray
    jaw_gain: float = 1.0
    max_jaw: float = 0.6
    rest: np.ndarray | None = None  # (E,) drive of the avatar's rest face (added to every frame)
    closing: np.ndarray | None = None  # (2, E) how much each component closes each eye's lids, metres
    max_closing: np.ndarray | None = None  # (2,) the most either eye may close (its blink's max_drive)
    lids: "LidCurve | None" = None  # lid drive read from the eye aperture (retarget), when measured
    gaze: GazeResponse | None = None  # the head turn renders read for the avatar's gaze (retarget), when measured
    brow_limits: tuple[float, float] | None = None  # (lowered, raised) joint brow drive limits, when measured

    def apply(self, expr: np.ndarray, jaw: float) -> tuple[np.ndarray, float]:
        """(expr (E,), jaw radians) read by the tracker -> what drives the avatar."""
        e = np.asarray(expr, np.float64) * self.gains
        if self.rest is not None:
            e = e + self.rest
        e = np.clip(e, 0.0, self.max_drive)
        if self.closing is not None:
            # Blink, squint and lowered brows together close a lid further than any one of them
            # may: the components that close it are scaled back to the blink's limit.
            for c, top in zip(self.closing, self.max_closing):
                shut = np.where(c > 0, c, 0.0)
                total = float(e @ c)
                if total > top and e @ shut > 0:
                    factor = max(0.0, (top - float(e @ (c - shut))) / float(e @ shut))
                    e = np.where(c > 0, e * min(1.0, factor), e)
        return e.astype(np.asarray(expr).dtype, copy=False), float(np.clip(jaw * self.jaw_gain, 0.0, self.max_jaw))

    @classmethod
    def identity(cls, num_expr: int) -> "ExpressionCalibration":
        return cls(np.ones(num_expr), np.full(num_expr, 1.0))

    @classmethod
    def from_table(cls, names: Sequence[str], table: dict[str, tuple[float, float]]) -> "ExpressionCalibration":
        """(gain, max_drive) by component name (missing names: gain 1, max 1); JAW for the jaw."""
        gains = np.array([table.get(n, (1.0, 1.0))[0] for n in names])
        top = np.array([table.get(n, (1.0, 1.0))[1] for n in names])
        jaw_gain, max_jaw = table.get(JAW, (1.0, 0.6))
        return cls(gains, top, jaw_gain, max_jaw)


def default_calibration(data: HeadModelData, seen: bool = False) -> ExpressionCalibration:
    """The measured response of the open head; other models (FLAME) are not measured: identity.
    seen: the fit reads expressions and jaw in the seen basis (seen_offset), already in units of
    what drives the avatar, so gains are 1 (the limits, rest drive and lid closing still apply)."""
    if data.name != "open-head":
        return ExpressionCalibration.identity(len(data.expr_names))
    cal = ExpressionCalibration.from_table(data.expr_names, OPEN_HEAD_RESPONSE)
    if seen:
        cal.gains = np.ones_like(cal.gains)
        cal.jaw_gain = 1.0
    cal.rest = np.array([OPEN_HEAD_REST.get(n, 0.0) for n in data.expr_names])
    cal.closing = lid_closing(data)
    blinks = [i for i, n in enumerate(data.expr_names) if n.startswith("eyeBlink")]
    cal.max_closing = np.array([max(c[i] * cal.max_drive[i] for i in blinks) for c in cal.closing])
    if OPEN_HEAD_LIDS[0]:
        cal.lids = LidCurve(np.array(OPEN_HEAD_LIDS[0]), np.array(OPEN_HEAD_LIDS[1]))
    cal.brow_limits = OPEN_HEAD_BROW_LIMITS
    if OPEN_HEAD_GAZE[0]:
        cal.gaze = GazeResponse(np.array(OPEN_HEAD_GAZE[0]), np.array(OPEN_HEAD_GAZE[1]))
    return cal


# MediaPipe Face Mesh upper and lower lid midpoints of each eye.
LIDS = ((159, 145), (386, 374))


def _pick(points: np.ndarray, wanted: Sequence[int], index: Sequence[int] | None) -> np.ndarray | None:
    """(len(wanted), 2) the points (L, 2+) with MediaPipe indices wanted; index (L,) the MediaPipe
    index of each point (None: points are in MediaPipe's order). None when one is missing."""
    p = np.asarray(points, np.float64)[:, :2]
    if index is None:
        return p[list(wanted)] if max(wanted) < len(p) else None
    where = _positions(np.asarray(index, np.int64).tobytes())
    if any(i not in where or where[i] >= len(p) for i in wanted):
        return None
    return p[[where[i] for i in wanted]]


@lru_cache(maxsize=16)
def _positions(index: bytes) -> dict[int, int]:
    """MediaPipe index -> position in an index array (its int64 bytes): the retargeter measures
    the same few embeddings many times a frame."""
    return {int(m): i for i, m in enumerate(np.frombuffer(index, np.int64))}


def lid_gaps(points: np.ndarray, index: Sequence[int] | None = None) -> np.ndarray | None:
    """(2,) the lid gap of each eye (LIDS order), in the units of points (L, 2+); index (L,) the
    MediaPipe index of each point (None: points are in MediaPipe's order). None when the points
    lack a lid."""
    p = _pick(points, [i for lid in LIDS for i in lid], index)
    return None if p is None else np.linalg.norm(p[0::2] - p[1::2], axis=1)


# MediaPipe Face Mesh: each brow's upper line and its eye's corners (subject's right, then left).
BROWS = ((70, 63, 105, 66, 107), (300, 293, 334, 296, 336))
BROW_EYES = ((33, 133), (263, 362))


def brow_height(points: np.ndarray, index: Sequence[int] | None = None) -> float | None:
    """How high the brows sit: the mean over both brows of the distance from the brow's upper
    line (its mean) to its eye's centre (the corners' mean), over the distance between the eye
    centres. points (L, 2+), index (L,) as in lid_gaps; None when the points lack one."""
    p = _pick(points, [i for brow in BROWS for i in brow] + [i for eye in BROW_EYES for i in eye], index)
    if p is None:
        return None
    split = sum(len(brow) for brow in BROWS)
    lines = np.stack([part.mean(0) for part in np.split(p[:split], len(BROWS))])
    centres = p[split:].reshape(len(BROW_EYES), -1, 2).mean(1)
    iod = float(np.linalg.norm(centres[1] - centres[0]))
    if iod < 1e-9:
        return None
    return float(np.linalg.norm(lines - centres, axis=1).mean() / iod)


# MediaPipe Face Mesh: the inner lips' middle points, upper and lower.
INNER_LIPS = (13, 14)


def lip_gap(points: np.ndarray, index: Sequence[int] | None = None) -> float | None:
    """The inner lips' gap in the units of points (L, 2+); index as in lid_gaps; None when the
    points lack the inner lips."""
    p = _pick(points, INNER_LIPS, index)
    return None if p is None else float(np.linalg.norm(p[0] - p[1]))


def mouth_opening(points: np.ndarray, index: Sequence[int] | None = None) -> float | None:
    """The inner lips' gap over the distance between the eye centres (each the mean of its
    corners, BROW_EYES); points (L, 2+), index as in lid_gaps; None when one is missing."""
    p = _pick(points, [*INNER_LIPS, *(i for eye in BROW_EYES for i in eye)], index)
    if p is None:
        return None
    iod = float(np.linalg.norm(p[2:4].mean(0) - p[4:6].mean(0)))
    return None if iod < 1e-9 else float(np.linalg.norm(p[0] - p[1])) / iod


# The default avatar's mouth opening as MediaPipe reads it on frontal renders (inner lips over
# inter-ocular distance) at these jaw angles (radians), expression neutral: opening from the
# first few hundredths of a radian, saturated from 0.35 (scripts/fit_lipsync.py measures it).
# With the lip curtain's own lip colours, stretched over the opening as a red membrane, renders
# read shut below 0.04 rad and barely open below 0.1 (0.055 at 0.08 rad, against 0.122 at 0.09 now).
AVATAR_OPENING = ((0.0, 0.03, 0.06, 0.09, 0.12, 0.16, 0.2, 0.25, 0.3, 0.35),
                  (0.001, 0.024, 0.088, 0.122, 0.187, 0.259, 0.317, 0.374, 0.4, 0.457))


def jaw_for_opening(opening: float) -> float:
    """Jaw angle (radians) at which the default avatar shows this mouth opening (AVATAR_OPENING)."""
    jaw, seen = AVATAR_OPENING
    return float(np.interp(opening, seen, jaw))


MIN_STEP = 0.01  # LidCurve: the least change of the rendered gap ratio a lid level must show


@dataclass
class LidCurve:
    """How open the avatar's eyes read on its renders along one lid drive s: s in 0..1 drives
    eyeBlink s (eyeWide at its rest drive), s < 0 eyeWide rest - s (no blink). ratio (K,): the
    lid gap MediaPipe sees on the render at levels (K,) (ascending, 0 among them) over the rest
    render's.

    A driver's eye is read as the ratio of its lid gap to the gap its neutral face would have at
    the same head pose; level(ratio) is the drive whose renders show the same ratio, so the
    avatar's eye opens and closes in proportion to the person's, whatever the person's and the
    avatar's eye sizes (a blink-sized landmark motion on a real face is three times the avatar's
    whole lid travel on renders)."""

    levels: np.ndarray
    ratio: np.ndarray

    def level(self, ratio: float) -> float:
        """The lid drive s whose renders read this gap ratio; ratios past the measured ones give
        the end levels (the most open, the most closed that renders still read)."""
        r = np.minimum.accumulate(np.asarray(self.ratio, np.float64))  # closing never reads as opening
        top = int(np.argmin(r))  # past the first reading of the smallest gap, renders read no less
        levels = np.asarray(self.levels, np.float64)
        # Walking out from the rest level, a level counts only where renders read it at least
        # MIN_STEP further from rest than the last one: over a flat stretch (eyeWide past where the
        # lids open any further) MediaPipe's jitter on the driver's lids would swing the whole stretch.
        zero = int(np.argmin(np.abs(levels)))
        keep = [zero]
        for i in range(zero - 1, -1, -1):
            if r[i] >= r[keep[0]] + MIN_STEP:
                keep.insert(0, i)
        for i in range(zero + 1, top + 1):
            if r[i] <= r[keep[-1]] - MIN_STEP:
                keep.append(i)
        return float(np.interp(ratio, r[keep][::-1], levels[keep][::-1]))


# Lid drive levels measured for LidCurve: closing from the rest face (on past blink 1, see
# OPEN_HEAD_LIDS), and opening past it.
LID_LEVELS = (-0.5, 0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)


def measure_lid_curve(render: Callable[[float, float], "np.ndarray | None"], rest_wide: float,
                      levels: Sequence[float] = LID_LEVELS) -> LidCurve:
    """render(blink, wide) -> MediaPipe's landmarks (478, 2+) on a frontal render of the avatar
    with both eyes so driven (None when no face is found). The ratio at each level is the mean
    over both eyes of the lid gap over the rest render's (blink 0, wide rest_wide); levels where
    no face is found are left out."""
    def gaps(s: float) -> np.ndarray | None:
        lm = render(max(s, 0.0), rest_wide - min(s, 0.0))
        return None if lm is None else lid_gaps(lm)
    rest = gaps(0.0)
    if rest is None or not (rest > 0).all():
        raise ValueError("no open eyes found on the render at rest")
    kept, ratio = [], []
    for s in levels:
        g = gaps(s)
        if g is not None:
            kept.append(float(s))
            ratio.append(float(np.mean(g / rest)))
    return LidCurve(np.array(kept), np.array(ratio))


def lid_closing(data: HeadModelData) -> np.ndarray:
    """(2, E): per eye, how much each expression component at 1 narrows the head model's lid gap
    (metres; negative opens it)."""
    from savatar.core.drive.tracking import LandmarkModel, mediapipe_indices

    model = LandmarkModel(data)
    where = {int(m): i for i, m in enumerate(mediapipe_indices(data))}
    rest = model.rest()
    out = np.zeros((2, model.num_expr))
    for k in range(model.num_expr):
        e = np.zeros(model.num_expr)
        e[k] = 1.0
        moved = model.rest(e)
        for j, (up, low) in enumerate(LIDS):
            if up in where and low in where:
                out[j, k] = (np.linalg.norm(rest[where[up]] - rest[where[low]])
                             - np.linalg.norm(moved[where[up]] - moved[where[low]]))
    return out


# landmarks(expr (E,), jaw radians) -> (L, 2) pixels: MediaPipe's on a render of the avatar so
# driven (None when it finds no face), or the head model's own projected landmarks.
Landmarks = Callable[[np.ndarray, float], "np.ndarray | None"]

LEVELS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)
JAW_LEVELS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


def response(seen: np.ndarray, model: np.ndarray) -> float:
    """How much of the model's landmark motion model (L, 2) (pixels, from the rest face) shows in
    the motion seen (L, 2): the projection of seen onto model's direction, in units of model."""
    m = np.asarray(model, np.float64).ravel()
    return float(np.asarray(seen, np.float64).ravel() @ m / max(m @ m, 1e-12))


def measure_response(render: Landmarks, model: Landmarks, names: Sequence[str], levels: Sequence[float] = LEVELS,
                     jaw_levels: Sequence[float] = JAW_LEVELS) -> dict[str, tuple[float, float]]:
    """Per component (and JAW): (gain, max_drive). At each level a the landmark motion MediaPipe
    sees on the render (from the rest render) is projected on the model's own motion at level 1
    (0.1 rad for the jaw): s(a), the motion seen in model units. max_drive is the first level
    where s comes within 5 % of its peak (beyond it the render stops reading as more of the expression: a blink closed into
    featureless skin); gain is the level per unit of s, the least-squares slope up to there.
    Components not seen at all (s never above 0.05) are left out (gain 1, max 1)."""
    rest_seen, rest_model = render(np.zeros(len(names)), 0.0), model(np.zeros(len(names)), 0.0)
    if rest_seen is None:
        raise ValueError("no face found on the render at rest")
    out: dict[str, tuple[float, float]] = {}
    for k, name in enumerate([*names, JAW]):
        def at(a: float) -> tuple[np.ndarray, float]:
            e = np.zeros(len(names))
            if name == JAW:
                return e, a
            e[k] = a
            return e, 0.0
        unit = model(*at(0.1 if name == JAW else 1.0)) - rest_model
        asked, seen = [], []
        for a in (jaw_levels if name == JAW else levels):
            lm = render(*at(a))
            if lm is None:
                break
            asked.append(a / 0.1 if name == JAW else a)
            seen.append(response(lm - rest_seen, unit))
        if not seen or max(seen) < 0.05:
            continue
        top = _first_near_peak(seen)
        a, s = np.asarray(asked[:top + 1]), np.asarray(seen[:top + 1])
        slope = float((a * s).sum() / (a * a).sum())
        if slope <= 0:
            continue
        scale = 0.1 if name == JAW else 1.0
        if 1.0 / slope > GAIN_RANGE[1]:  # barely seen: driving it harder would mostly amplify jitter
            continue
        out[name] = (round(max(1.0 / slope, GAIN_RANGE[0]), 3), round(asked[top] * scale, 3))
    return out


SEEN_ASSET = "open_head_seen.npz"  # in savatar.assets, written by scripts/calibrate_tracking.py
SEEN_LEVELS = (0.25, 0.5, 0.75, 1.0)
SEEN_JAW_LEVELS = (0.05, 0.1, 0.15, 0.2, 0.3)
# Below this much motion of its own (pixels per unit, or per 0.1 rad of jaw) a landmark keeps the
# model's motion: what MediaPipe reports there is its jitter and its re-estimate of the whole
# face, which would let a component explain motion anywhere (the jaw moving the brows).
SEEN_MIN_PX = 1.0


def _similarity_basis(points: np.ndarray) -> np.ndarray:
    """(2L, 4): small 2D translation, scale and rotation of points (L, 2) about their mean, rows u, v interleaved."""
    x = points - points.mean(0)
    a = np.zeros((2 * len(x), 4))
    a[0::2, 0] = a[1::2, 1] = 1.0
    a[0::2, 2], a[1::2, 2] = x[:, 0], x[:, 1]
    a[0::2, 3], a[1::2, 3] = -x[:, 1], x[:, 0]
    return a


def _seen_change(seen: np.ndarray, own: np.ndarray, frame: np.ndarray, depth: np.ndarray, K: np.ndarray,
                 unit: float = 1.0) -> np.ndarray:
    """Model-space (L, 3) change that turns the model's motion own (L, 2) pixels per unit into the
    motion seen (L, 2): the difference without its similarity part (MediaPipe re-placing the whole
    face), faded out where the model moves less than SEEN_MIN_PX per unit (times unit), lifted to
    depth (L,) in the image plane."""
    d = seen - own
    sim = _similarity_basis(frame)
    d = d - (sim @ np.linalg.lstsq(sim, d.reshape(-1), rcond=None)[0]).reshape(-1, 2)
    n2 = (own * own).sum(1, keepdims=True) * unit ** 2
    d = d * n2 / (n2 + SEEN_MIN_PX ** 2)
    # Image u is world x, image v is world -y (TRACKING_VIEWMAT); a render shows no depth, so the
    # model's own depth motion is kept.
    return np.stack([d[:, 0] * depth / K[0, 0], -d[:, 1] * depth / K[1, 1], np.zeros(len(d))], 1)


def _slope(asked: Sequence[float], seen: Sequence[np.ndarray]) -> np.ndarray:
    a = np.asarray(asked, np.float64)
    return np.tensordot(a, np.stack(seen), 1) / float(a @ a)


def measure_seen_offset(render: Landmarks, model: Landmarks, names: Sequence[str], depth: np.ndarray, K: np.ndarray,
                        max_drive: Sequence[float], max_jaw: float = 0.3, levels: Sequence[float] = SEEN_LEVELS,
                        jaw_levels: Sequence[float] = SEEN_JAW_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """How the landmark motion MediaPipe sees on renders of the avatar differs from the head
    model's own: (expr_offset (L, 3, E) model-space metres per unit of each expression
    component, jaw_offset (L, 3) metres per radian of jaw opening), LandmarkModel's arguments.

    render and model give landmark pixels (L, 2) of a camera K (3, 3) looking at the head at rest
    (model axes = tracking world axes); depth (L,) the landmarks' camera depth in metres. Per
    component the seen motion is the least-squares slope through the origin over the levels up
    to its max_drive (past it renders stop reading as more); see _seen_change for what is kept."""
    zero = np.zeros(len(names))
    rest_seen, rest_model = render(zero, 0.0), model(zero, 0.0)
    if rest_seen is None:
        raise ValueError("no face found on the render at rest")
    out = np.zeros((len(rest_seen), 3, len(names)))
    for k in range(len(names)):
        asked, seen = [], []
        for a in levels:
            e = zero.copy()
            e[k] = a
            lm = render(e, 0.0) if a <= max_drive[k] + 1e-9 else None
            if lm is None:
                break
            asked.append(a)
            seen.append(lm - rest_seen)
        if asked:
            e = zero.copy()
            e[k] = 1.0
            out[:, :, k] = _seen_change(_slope(asked, seen), model(e, 0.0) - rest_model, rest_seen, depth, K)
    asked, seen, own = [], [], []
    for a in jaw_levels:
        lm = render(zero, a) if a <= max_jaw + 1e-9 else None
        if lm is None:
            break
        asked.append(a)
        seen.append(lm - rest_seen)
        own.append(model(zero, a) - rest_model)
    jaw = np.zeros((len(rest_seen), 3))
    if asked:
        # The jaw's own motion is a rotation: its slope is taken over the same levels.
        jaw = _seen_change(_slope(asked, seen), _slope(asked, own), rest_seen, depth, K, unit=0.1)
    return out, jaw


# Head yaws (degrees) of the renders measure_seen_rest reads the landmarks' depth from.
SEEN_REST_YAWS = (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0)


def measure_seen_rest(seen: np.ndarray, model: np.ndarray, jacobian: np.ndarray,
                      fixed: np.ndarray | None = None) -> np.ndarray:
    """Where MediaPipe places the landmarks of the avatar at rest, as a model-space offset (L, 3)
    (metres) of the head model's rest landmarks: the least-squares one over V views of the head
    turned (SEEN_REST_YAWS). seen (V, L, 2) MediaPipe's pixels on the renders, model (V, L, 2)
    the head model's own, jacobian (V, L, 2, 3) pixels per metre of model-space offset at each.
    fixed (L,) bool: landmarks left at the model's (the face oval, a silhouette whose place on
    the face changes with the view). A view's one turn cannot say a landmark's depth; several
    can: on the default avatar MediaPipe places the mouth corners 7 mm in front of the mesh
    points they are embedded at and the brows 3 mm behind, which the fit, turning the head,
    read as mouth and brow expressions."""
    res = np.asarray(seen, np.float64) - np.asarray(model, np.float64)
    j = np.asarray(jacobian, np.float64)
    a = np.einsum("vlik,vlij->lkj", j, j) + 1e-6 * np.eye(3)
    b = np.einsum("vlik,vli->lk", j, res)
    out = np.linalg.solve(a, b[..., None])[..., 0]
    if fixed is not None:
        out[np.asarray(fixed, bool)] = 0.0
    return out


@lru_cache(maxsize=1)
def _seen_asset() -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(names, expr offset, jaw offset, rest offset or None) of SEEN_ASSET, or None."""
    from importlib import resources

    path = resources.files("savatar.assets").joinpath(SEEN_ASSET)
    if not path.is_file():
        return None
    with path.open("rb") as fh, np.load(fh) as z:
        rest = z["rest"].astype(np.float64) if "rest" in z else None
        return tuple(str(n) for n in z["names"]), z["offset"].astype(np.float64), z["jaw"].astype(np.float64), rest


def seen_offset(data: HeadModelData) -> tuple[np.ndarray, np.ndarray] | None:
    """The open head's measured (expr_offset (L, 3, E), jaw_offset (L, 3)) (measure_seen_offset
    on the default avatar), or None for other models or when it was not measured for these
    components. Callers must not modify them."""
    if data.name != "open-head":
        return None
    asset = _seen_asset()
    if asset is None or asset[0] != tuple(data.expr_names):
        return None
    return asset[1], asset[2]


def seen_rest(data: HeadModelData) -> np.ndarray | None:
    """The open head's measured rest offset (L, 3) (measure_seen_rest on the default avatar), or
    None for other models or when it was not measured. Callers must not modify it."""
    if seen_offset(data) is None:
        return None
    return _seen_asset()[3]


def symmetric(table: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Left and right components (name_L, name_R) given one response: the mean gain and the
    smaller max_drive. The head model and the avatar's renders are near mirror images, so their
    difference in one measurement is MediaPipe's noise, and a driver's symmetric smile must stay
    symmetric on the avatar."""
    out = dict(table)
    for name in table:
        if name.endswith("_L") and name[:-2] + "_R" in table:
            (gl, ml), (gr, mr) = table[name], table[name[:-2] + "_R"]
            out[name] = out[name[:-2] + "_R"] = (round((gl + gr) / 2, 3), min(ml, mr))
    # One side measured, the other not (its motion barely seen once): both sides get that one.
    for name in table:
        other = {"_L": "_R", "_R": "_L"}.get(name[-2:])
        if other is not None and name[:-2] + other not in table:
            out[name[:-2] + other] = table[name]
    return out

"""Retargeting a driver's face onto an avatar: expression and pose transfer, identity does not.

The tracker fits the avatar's head model to another person's landmarks, so everything in which
that person's face differs from the avatar's (a wider mouth, heavier brows, a head held tilted)
comes out as a constant expression or pose. The driver's neutral face removes it: the fit of a
resting frame (or the median over the first second of a clip) is turned into a per-landmark
offset of the model's rest face (LandmarkModel's landmark_offset, in model space, so it moves
with the head), and the neutral head rotation is taken off the root. Fits made with that offset
read the person's neutral as the avatar's rest face, zero expression, and every expression as a
departure from it.

Expressions and jaw are read in the seen basis (savatar.core.drive.calibration.seen_offset: the
landmark motion MediaPipe sees on renders of the avatar, not the mesh's own), and the calibration
adds the avatar's rest drive and the limits past which renders stop reading as more.

The eyelids are read apart from the fit (when the calibration has a LidCurve): each eye's lid gap
over the gap the driver's neutral face would have at the fitted head pose gives how far that eye
is open, and the lid drive whose renders read the same fraction drives the avatar's blink (or
eyeWide past its rest drive). A real blink moves the lids about three times as far as the
avatar's lids travel on renders: read as landmark motion it saturates the blink a third of the
way in, so half-closed, closed and looking down all rendered alike. What the avatar's other
components close (lowered brows, cheek squints) or open (raised brows) of an eye comes off or
onto its blink.

The brows and the jaw are read apart too, after the fit: the brows are driven at the one level
(raised or lowered) at which the fit's model, read in the seen basis, holds them as high above
the eyes as the driver's are, and the jaw at the opening at which its inner lips part as far as
the driver's, the rest of the face as fitted. Fitting all landmarks at once, the fit paid for a
grin's cheeks with lowered brows and for a talking mouth's parted lips with lip components whose
renders stay near shut.

The head roll MediaPipe reads is the tilt of the line through the eye corners: after the fit the
avatar's head is turned about the camera's axis until its eye line leans as the driver's does,
less the lean of the driver's neutral (Retargeter._level_eye_line).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from savatar.core.drive.motion import Motion
from savatar.core.drive.calibration import (BROW_EYES, BROWS, INNER_LIPS, LIDS, ExpressionCalibration, brow_height,
                                           default_calibration, jaw_for_opening, lid_closing, lid_gaps, lip_gap,
                                           mouth_opening, seen_offset, seen_rest)
from savatar.core.drive.tracking import (FLIP, FaceFitter, FitResult, LandmarkModel, TrackerParams, jitter_filter,
                                         mediapipe_indices, rodrigues, rotation_vector)
from savatar.core.head.head_model import HeadModelData


MAX_READING = 2.5
EYE_CORNERS = (33, 133, 263, 362)  # MediaPipe: right eye outer, inner; left eye outer, inner
# The most the eye line turns the avatar's head on top of the fit's roll (radians): enough for
# what expression components take of a real tilt, not enough for a misplaced eye to throw it.
MAX_ROLL_FIX = math.radians(7.0)

# Components whose landmark motion another component explains as well (eyeWide and eyeSquint
# against eyeBlink on a lid, one eye's lids close the other's) get a stronger prior, so a
# closing eye reads as a blink and not as blink + wide + squint, which renders as a grimace.
# The lip rolls, jawForward and cheekPuff likewise: in the seen basis the fit paired them with
# mouthFunnel and the lip presses, whose landmark motions cancel linearly but whose renders do
# not add up (talk_glasses' pursed "oo" read as funnel 1.5 + roll 1.6 + jawForward 1.5: the
# avatar's lips rendered 0.24 of the eye distance open where the driver's were 0.05), so they
# explain only what nothing else does. bench puppet: talk_glasses mouth opening 0.71 -> 0.80,
# frown_turn mouth width 0.57 -> 0.65.
PRIOR_SCALE = {"eyeWide_L": 10.0, "eyeWide_R": 10.0, "eyeSquint_L": 10.0, "eyeSquint_R": 10.0,
               "mouthRollUpper": 10.0, "mouthRollLower": 10.0, "jawForward": 10.0, "cheekPuff": 10.0}
# Pairs driven with their mean where the brows are not read apart (a model without the brow
# landmarks): people lower both brows together, but on a turned head the fit reads one side's
# brow as lowered (frown_turn: browDown_R 0.95 with browDown_L 0 in a plain frown).
SYMMETRIC = (("browDown_L", "browDown_R"),)
# The brows are driven as one level (Retargeter._brow_drive): raised, all three of these at the
# level; lowered, both of those.
BROWS_UP = ("browInnerUp", "browOuterUp_L", "browOuterUp_R")
BROWS_DOWN = ("browDown_L", "browDown_R")
# How much of what the lip components open shows on top of an open jaw in the default avatar's
# renders: they do not add up. Measured (MediaPipe's inner-lip gap, four lip mixes at jaw 0.05,
# 0.1 and 0.15 rad): 0.1-1.2, median 0.57, 0.35 at speech-sized jaws. Taking off all of it, the
# avatar's mouth opened 0.6-0.8 as far as the driver's (bench puppet amplitude); with half,
# 0.8-1.15, and the other people's mouth opening followed at 0.96 where it followed at 0.93.
LIP_SHARE = 0.5
# When the jaw drive opens the jaw this much (radians) past the fit's, the fit carries on with the
# jaw held there (Retargeter._fit_with_jaw), for this many iterations (each about 1 ms).
# bench puppet: grin_gaze's mouth width 0.84 -> 0.96, talk_speech's 0.84 -> 0.89.
JAW_REFIT_MIN = 0.01
JAW_REFIT_ITERATIONS = 1
# The driver's lid gap over his neutral's at which the irises MediaPipe places stop being
# guesses, and at which they are trusted: a closing lid hides the iris and drags its landmarks
# down, which the fit read as the eyes rolling down 0.5 rad in every blink (grin_gaze), and the
# avatar's eyeballs turned behind its closing lids read as eyes half open. In between, the gaze
# moves from the last trusted one to the fitted one.
GAZE_TRUST = (0.35, 0.7)


def _line_angle(corners: np.ndarray) -> float:
    """Image angle (radians, y down) of the line from the right eye's centre to the left's, each
    the mean of its two corners: corners (4, 2) in EYE_CORNERS' order."""
    d = corners[2:].mean(0) - corners[:2].mean(0)
    return math.atan2(d[1], d[0])


def _wrap(a: float) -> float:
    """An angle (radians) in [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


@dataclass
class Neutral:
    """A driver's resting face: offset (L, 3) of the model's rest landmarks in model space
    (metres), root (3, 3) the head rotation at rest in the tracking world, frames how many
    frames it was measured on."""

    offset: np.ndarray
    root: np.ndarray
    frames: int = 1


def _frame_offset(fitter: FaceFitter, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One resting frame's (offset (L, 3), root (3, 3)): what the fitted expression, jaw and gaze
    add to the rest face, plus the reprojection residual lifted to the landmark's depth, all in
    model space. The model with this offset reproduces pts exactly at zero expression."""
    fitter.reset()
    fitter.fit(pts, iterations=30)
    m, r0 = fitter.model, fitter.r0
    t, jaw, eyes, e = fitter._split(fitter.x)
    xw = m.evaluate(r0, t, jaw, eyes, e)
    uv, _ = fitter._project(xw)
    res = uv - pts[:, :2]
    z = (xw @ FLIP.T)[:, 2]
    k = fitter.K
    d_cam = np.stack([-res[:, 0] * z / k[0, 0], -res[:, 1] * z / k[1, 1], np.zeros(len(z))], 1)
    d_model = (d_cam @ FLIP) @ r0  # camera -> world (FLIP is its own inverse) -> model: R0^T d
    shift = m.jrb @ e  # the root joint's expression shift, unrotated in evaluate, rotated in the offset
    face = m.evaluate(np.eye(3), np.zeros(3), jaw, eyes, e) - shift
    return face - m.rest() + shift @ r0 + d_model, r0


def measure_neutral(data: HeadModelData, K: np.ndarray, frames: Sequence[np.ndarray], shape: np.ndarray | None = None,
                    static_offset: np.ndarray | None = None,
                    seen: tuple[np.ndarray, np.ndarray] | None = None,
                    rest: np.ndarray | None = None) -> Neutral:
    """The neutral of resting frames: landmarks (L, 2+) pixels each, camera K (3, 3). The
    median offset over frames (a blink among them does not count) and the mean rotation.
    seen: the (expr_offset, jaw_offset) the fits with this neutral will use; rest (L, 3) the
    landmarks' offset they add under the neutral's (calibration.seen_rest)."""
    fitter = FaceFitter(data, K, shape, TrackerParams(filter=False), static_offset, rest,
                        *(seen if seen is not None else (None, None)))
    offsets, rots = [], []
    for pts in frames:
        off, r0 = _frame_offset(fitter, np.asarray(pts, np.float64))
        offsets.append(off)
        rots.append(rotation_vector(r0))
    if not offsets:
        raise ValueError("a neutral face needs at least one frame with a face")
    return Neutral(np.median(np.stack(offsets), 0), rodrigues(np.mean(rots, 0)), len(offsets))


def rest_frames(landmarks: Sequence[np.ndarray | None], count: int = 10) -> list[int]:
    """Positions of the count frames of a clip (MediaPipe landmarks (478, 2+) each, None without
    a face) where the face looks most at rest: lips closed (the inner-lip gap within the lowest
    fifth of the clip's), eyes open, mouth width and brows near their typical (median) values,
    and the head turned least. A talking or smiling first second is a poor neutral; a person's
    resting face is the one they return to between expressions."""
    from savatar.core.reenact.face_signals import face_signals

    seen = [k for k, p in enumerate(landmarks) if p is not None]
    if len(seen) <= count:
        return seen
    sig = [face_signals(landmarks[k]) for k in seen]
    col = lambda key: np.array([x[key] for x in sig])  # noqa: E731
    def spread(v: np.ndarray) -> np.ndarray:
        return (v - np.median(v)) / max(float(np.percentile(v, 75) - np.percentile(v, 25)), 1e-6)
    mouth = col("mouth_open")
    score = (np.maximum(spread(mouth) - spread(mouth)[mouth <= np.percentile(mouth, 20)].max(), 0.0)
             + np.abs(spread(col("mouth_width"))) + np.abs(spread(col("brow_height")))
             + np.maximum(-spread(col("eye_open")), 0.0) + np.abs(spread(col("head_yaw"))))
    return [seen[k] for k in sorted(np.argsort(score, kind="stable")[:count])]


class Retargeter:
    """Fits landmark pixels (L, 2+) of camera K (3, 3) with the avatar's identity (shape (S,),
    static_offset (V, 3)) and the driver's neutral, and returns what drives the avatar.

    fit(points) -> FitResult: expr (E,) and jaw calibrated, root rotation relative to the
    neutral's, translation as fitted, residual_px the fit's RMS reprojection error in pixels.
    Without a neutral (set_neutral not called yet) the raw fit is calibrated alone.
    """

    def __init__(self, data: HeadModelData, K: np.ndarray, shape: np.ndarray | None = None,
                 static_offset: np.ndarray | None = None, params: TrackerParams | None = None,
                 calibration: ExpressionCalibration | None = None, neutral: Neutral | None = None,
                 seen: bool = True):
        self.data, self.K, self.shape, self.static_offset = data, np.asarray(K, np.float64), shape, static_offset
        # A person's full expressions go past the head model's 1 (the open head's smile 1 is a
        # slight smile): bounded at 1, a wide grin is explained by smile 1 plus frown, sneer and
        # puff, and those show on the avatar as a grimace.
        self.params = replace(params or TrackerParams(filter=False), max_expr=MAX_READING)
        # The seen basis (calibration.seen_offset): expressions and jaw are read as the motion
        # MediaPipe sees on renders of the avatar, not the mesh's own, so a reading is what the
        # avatar must be driven with for its renders to show the same landmark motion.
        self.seen = seen_offset(data) if seen else None
        # Where MediaPipe places the rest face's landmarks in depth (calibration.seen_rest): with
        # the mesh's own depths, turning the head read as mouth and brow expressions.
        self.seen_rest = seen_rest(data) if seen else None
        self.calibration = calibration if calibration is not None else default_calibration(data, self.seen is not None)
        self.neutral: Neutral | None = None
        self.fitter = self._fitter(None)
        self.last_residuals: list[float] = []
        self._index = mediapipe_indices(data)
        self._eyes = self._eye_components()
        self._brows = self._brow_components()
        self._lips = set(INNER_LIPS) <= {int(m) for m in self._index}
        self._mediapipe_order = bool(np.array_equal(self._index, np.arange(len(self._index))))
        names = list(data.expr_names)
        self._pairs = [(names.index(a), names.index(b)) for a, b in SYMMETRIC if a in names and b in names]
        self._corners = self._eye_corners()
        # The avatar's own eye corners (no driver's neutral, no seen basis) for a drive, to keep
        # its eye line on the driver's (_level_eye_line): a model of those four landmarks only.
        self._avatar = None
        if self._corners is not None:
            corners = replace(data, lmk_faces=data.lmk_faces[self._corners], lmk_bary=data.lmk_bary[self._corners])
            self._avatar = LandmarkModel(corners, shape, static_offset)
        self._roll_ref: float | None = None
        self._gaze: np.ndarray | None = None  # the last gaze (6,) the drive trusted (_hold_gaze)
        if neutral is not None:
            self._use(neutral)

    def _eye_components(self) -> list[tuple[int, int, int]] | None:
        """Per eye (LIDS order) the (blink, wide, squint) component indices, the ones that
        close (open) that eye's lids most; None when the lids are not read apart (no LidCurve,
        no lid closing measured, the components or the lid landmarks missing)."""
        names = list(self.data.expr_names)
        if self.calibration.lids is None or lid_gaps(np.zeros((len(self._index), 2)), self._index) is None:
            return None
        out = []
        for c in lid_closing(self.data):
            picked = []
            for prefix, sign in (("eyeBlink", 1.0), ("eyeWide", -1.0), ("eyeSquint", 1.0)):
                idx = [i for i, n in enumerate(names) if n.startswith(prefix)]
                if not idx:
                    return None
                picked.append(max(idx, key=lambda i: sign * c[i]))
            out.append(tuple(picked))
        return out

    def _brow_components(self) -> tuple[list[int], list[int]] | None:
        """(BROWS_UP, BROWS_DOWN) component indices; None when the brows are not read apart
        (a component or a brow landmark missing)."""
        names = list(self.data.expr_names)
        if any(n not in names for n in BROWS_UP + BROWS_DOWN):
            return None
        if not {i for side in BROWS + BROW_EYES for i in side} <= {int(m) for m in self._index}:
            return None
        return [names.index(n) for n in BROWS_UP], [names.index(n) for n in BROWS_DOWN]

    def _level_for(self, fit: FitResult, drives: Sequence[tuple[np.ndarray, float]], levels: Sequence[float],
                   measure: Callable[[np.ndarray, Sequence[int] | None], float | None]) -> float | None:
        """The level (within levels, ascending) at which measure(landmarks) of the fit's model
        (the driver's neutral face, read in the seen basis: what MediaPipe would see on the
        avatar's renders) equals measure(fit.landmarks): drives (expr (E,) as the fit reads
        it, jaw radians) one per level, the rest of the pose as fitted; the reading is linear
        between levels. None when the model's reading does not grow with the level (the head
        model's own inner lips, without the seen basis, do not part with its jaw)."""
        r = rodrigues(fit.pose[0:3])
        readings = []
        for e, jaw in drives:
            x = self._probe.evaluate(r, fit.translation, np.array([jaw, *fit.pose[7:9]]), fit.pose[9:11], e)
            readings.append(measure(self.fitter._project(x)[0], self._probe_index))
        if np.any(np.diff(readings) <= 1e-9):
            return None
        return float(np.interp(measure(self._in_mediapipe_order(fit.landmarks), None), readings, levels))

    def _in_mediapipe_order(self, points: np.ndarray) -> np.ndarray:
        """points (L, 2+) in the model's landmark order -> (M, 2) in MediaPipe's (NaN where the
        model has no landmark), for the measures that take MediaPipe's indices."""
        if self._mediapipe_order:
            return points
        out = np.full((int(self._index.max()) + 1, 2), np.nan)
        out[self._index] = np.asarray(points)[:, :2]
        return out

    def _as_read(self, fit: FitResult, expr: np.ndarray) -> np.ndarray:
        """The calibrated drive expr (E,) back in the fit's units (what the fit's model takes),
        limits applied, the lids as the fit read them (they move the eye corners)."""
        cal = self.calibration
        out = (np.asarray(expr, np.float64) - (cal.rest if cal.rest is not None else 0.0)) / cal.gains
        if self._eyes is not None:
            lids = [i for eye in self._eyes for i in eye]
            out[lids] = fit.expr[lids]
        return out

    def _brow_drive(self, fit: FitResult, expr: np.ndarray, face: np.ndarray) -> np.ndarray:
        """expr (E,) with the brows' drive replaced by the one level (raised or lowered) at
        which the avatar's brows sit as high above the eyes (calibration.brow_height) as the
        driver's do, the rest of the face as fitted (_level_for). The fit explains all landmarks
        at once and paid for a grin's cheeks with lowered brows (grin_gaze: browDown followed the
        smile, the driver's brows did not move); read apart, the brows do what the driver's do."""
        up, down = self._brows
        top = self.calibration.max_drive
        if self._eyes is not None:
            # Read with the lids open: the seen basis' blink carries the brow and eye-corner
            # landmarks along (+0.03 of the eye distance at 1), but the lid drive's renders read
            # the same brow height shut as open (within 0.008), so with the fitted blink in,
            # every real blink lowered the avatar's brows (grin_gaze: browDown 1).
            face = np.array(face, copy=True)
            face[[i for eye in self._eyes for i in eye]] = 0.0
        levels = [-float(min(top[down])), 0.0, float(min(top[up]))]
        if self.calibration.brow_limits is not None:
            # Each component alone reads higher up to its max_drive, but driven together the
            # brows read highest well before (calibration.OPEN_HEAD_BROW_LIMITS): driven past it,
            # a person's highest raises read as lower brows (another person's clip in bench
            # puppet: driven at 2.5, read at 0.40 of the eye distance, a smaller raise at 0.47).
            lowered, raised = self.calibration.brow_limits
            levels = [max(levels[0], -lowered), 0.0, min(levels[2], raised)]

        def with_brows(e: np.ndarray, level: float) -> np.ndarray:
            e = np.array(e, np.float64, copy=True)
            e[up] = max(level, 0.0)
            e[down] = max(-level, 0.0)
            return e

        level = self._level_for(fit, [(with_brows(face, v), fit.pose[6]) for v in levels], levels, brow_height)
        if level is None:
            return expr
        return with_brows(expr, level).astype(np.asarray(expr).dtype, copy=False)

    def _jaw_drive(self, fit: FitResult, jaw: float, face: np.ndarray) -> float:
        """The jaw opening (radians, up to the calibration's max_jaw) at which the avatar's inner
        lips part as far as the driver's, the rest of the face as fitted. The fit explained a
        talking mouth's parted lips with lip components whose renders stay near shut
        (talk_speech: lips a fifth of the eye distance apart on a spread mouth with little
        jaw); read apart, the mouth opens as far as the driver's. With the seen basis, the
        driver's opening over his neutral's (calibration.mouth_opening) less the share of what
        the fitted lip components open that shows on an open jaw (LIP_SHARE) goes through the
        default avatar's measured jaw -> opening response
        (calibration.AVATAR_OPENING): the seen basis is linear in the jaw, the renders' response
        is not, and read linearly, small openings stayed shut. Without the seen basis (other
        head models), the level whose inner-lip gap matches (_level_for).
        jaw: the calibrated reading, kept where the lips are not read; face (E,): the drive as
        the fit reads it (_as_read)."""
        if not self._lips:
            return jaw
        if self.seen is None:
            levels = np.linspace(0.0, self.calibration.max_jaw, 4)
            level = self._level_for(fit, [(face, v) for v in levels], levels, lip_gap)
            return jaw if level is None else level
        r = rodrigues(fit.pose[0:3])
        shut = np.array([0.0, *fit.pose[7:9]])

        def model_opening(e: np.ndarray) -> float:
            x = self._probe.evaluate(r, fit.translation, shut, fit.pose[9:11], e)
            return mouth_opening(self.fitter._project(x)[0], self._probe_index)

        # The model's face at rest is the driver's neutral: the gap over it is the driver's
        # opening over his neutral's; the lip components then take off their share.
        rest = model_opening(np.zeros(len(face)))
        lips = model_opening(face) - rest
        needed = mouth_opening(self._in_mediapipe_order(fit.landmarks)) - rest - LIP_SHARE * lips
        return float(min(jaw_for_opening(max(needed, 0.0)), self.calibration.max_jaw))

    def _eye_opening(self, fit: FitResult) -> float:
        """How open the driver's eyes are: the mean over both eyes of the lid gap in
        fit.landmarks over the gap his neutral face would have at fit's pose (1 at rest, 0 shut).
        Both eyes at once: MediaPipe's lids on a real face differ between the eyes by more than
        people wink, most of all on a turned head, and lids closing unevenly on the avatar's
        renders tilt the eye line MediaPipe reads (the head roll)."""
        seen = lid_gaps(fit.landmarks, self._index)
        x = self._probe.evaluate(rodrigues(fit.pose[0:3]), fit.translation, fit.pose[6:9], fit.pose[9:11],
                                 np.zeros(len(fit.expr)))
        neutral = lid_gaps(self.fitter._project(x)[0], self._probe_index)
        return float(np.mean(seen / np.maximum(neutral, 1e-9)))

    def _hold_gaze(self, pose: np.ndarray, opening: float) -> None:
        """Blend pose's gaze (9:15, in place) from the last trusted gaze to the fitted one as the
        eyes' opening goes through GAZE_TRUST, and remember the result."""
        low, high = GAZE_TRUST
        trust = float(np.clip((opening - low) / (high - low), 0.0, 1.0))
        if self._gaze is not None:
            pose[9:15] = self._gaze + trust * (pose[9:15] - self._gaze)
        self._gaze = pose[9:15].copy()

    def _lid_drive(self, expr: np.ndarray, opening: float) -> np.ndarray:
        """expr (E,) with each eye's blink, eyeWide and eyeSquint drive replaced by the lid drive
        read from the eyes' opening (_eye_opening)."""
        rest = self.calibration.rest if self.calibration.rest is not None else np.zeros(len(expr))
        out = np.array(expr, copy=True)
        level = self.calibration.lids.level(opening)
        for blink, wide, squint in self._eyes:
            out[blink] = max(level, 0.0)
            out[wide] = rest[wide] - min(level, 0.0)
            out[squint] = 0.0  # the lid drive is the whole of the lids' closing
        # Lowered brows, cheek squints and the like close the avatar's lids too (browDown at 1
        # lowers the upper lid 1.2 mm), raised brows open them (1.7 mm at 1): on top of a closed
        # lid drive lowered brows pushed the brow over the closed eye, where MediaPipe then found
        # the eye, tilted (frown_turn's frowning, closed-eyed stretches read 5-8 degrees of roll
        # the person did not make), and raised brows opened eyes the driver kept as they were.
        # The driver's lid gap already shows whatever his brows and cheeks do to it, so what
        # the avatar's other components close or open of each eye comes off or onto its blink.
        if self.calibration.closing is not None:
            lid = [i for eye in self._eyes for i in eye]
            for (blink, _, _), c in zip(self._eyes, self.calibration.closing):
                others = np.array(c, np.float64, copy=True)
                others[lid] = 0.0
                if c[blink] > 0:
                    out[blink] = max(0.0, out[blink] - float(out @ others) / c[blink])
        return out

    def _use(self, neutral: Neutral) -> None:
        self.neutral = neutral
        self.fitter = self._fitter(neutral.offset)

    def _fitter(self, offset: np.ndarray | None) -> FaceFitter:
        expr_offset, jaw_offset = self.seen if self.seen is not None else (None, None)
        if self.seen_rest is not None:
            offset = self.seen_rest if offset is None else self.seen_rest + offset
        fitter = FaceFitter(self.data, self.K, self.shape, self.params, self.static_offset, offset, expr_offset,
                            jaw_offset)
        for name, scale in PRIOR_SCALE.items():
            if name in self.data.expr_names:
                fitter.prior[11 + self.data.expr_names.index(name)] *= scale
        # The fit's model on the landmarks the brow, jaw and lid drives measure only: they
        # evaluate it five or six times a frame.
        index = mediapipe_indices(self.data)
        rows = np.flatnonzero(np.isin(index, [i for group in BROWS + BROW_EYES + LIDS + (INNER_LIPS,) for i in group]))
        probe = replace(self.data, lmk_faces=self.data.lmk_faces[rows], lmk_bary=self.data.lmk_bary[rows])
        take = lambda a: None if a is None else np.asarray(a)[rows]  # noqa: E731
        self._probe = LandmarkModel(probe, self.shape, self.static_offset, take(offset), take(expr_offset),
                                    take(jaw_offset))
        self._probe_index = index[rows]
        return fitter

    def set_neutral(self, frames: Sequence[np.ndarray]) -> Neutral:
        """Measure the driver's neutral on these resting frames' landmarks and fit with it from now on."""
        neutral = measure_neutral(self.data, self.K, frames, self.shape, self.static_offset, self.seen, self.seen_rest)
        self._use(neutral)
        self._roll_ref = None
        if self._corners is not None:
            # The neutral's own tilt (the driver's eye line against the avatar's on the resting
            # frames) stays out of the drive, as the neutral's head rotation does. At most ten
            # of them: live, this runs within one frame's fit.
            gaps = []
            for pts in [frames[k] for k in np.linspace(0, len(frames) - 1, min(len(frames), 10)).round().astype(int)]:
                self.fitter.reset()
                fit = self.apply(self.fitter.fit(np.asarray(pts, np.float64), 30))
                gaps.append(self._eye_line_gap(fit))
            self.fitter.reset()
            self._roll_ref = float(np.median(gaps))
        self._gaze = None
        return neutral

    def _eye_corners(self) -> np.ndarray | None:
        """Positions (4,) of MediaPipe's eye corners (EYE_CORNERS) among the model's landmarks, or
        None when the embedding lacks one."""
        where = {int(m): i for i, m in enumerate(self._index)}
        if any(c not in where for c in EYE_CORNERS):
            return None
        return np.array([where[c] for c in EYE_CORNERS])

    def _eye_line(self, points: np.ndarray) -> float:
        """The eye line's angle (_line_angle) in points (L, 2+) of the model's landmark order."""
        return _line_angle(np.asarray(points, np.float64)[self._corners, :2])

    def _avatar_eye_line(self, expr: np.ndarray, pose: np.ndarray, translation: np.ndarray) -> float:
        """The avatar's eye line (radians) driven by expr (E,), pose (15,), translation (3,)."""
        x = self._avatar.evaluate(rodrigues(pose[0:3]), translation, pose[6:9], pose[9:11], np.asarray(expr, np.float64))
        return _line_angle(self.fitter._project(x)[0])

    def _eye_line_gap(self, fit: FitResult) -> float:
        """The driver's eye line (fit.landmarks) less the avatar's under fit's drive, radians."""
        return _wrap(self._eye_line(fit.landmarks) - self._avatar_eye_line(fit.expr, fit.pose, fit.translation))

    def clear_neutral(self) -> None:
        self.neutral = None
        self._roll_ref = None
        self.fitter = self._fitter(None)

    def reset(self) -> None:
        """Forget the warm start (a lost face): the next fit starts from solvePnP."""
        self.fitter.reset()
        self._gaze = None

    def fit(self, points: np.ndarray, iterations: int | None = None) -> FitResult:
        fit = self.fitter.fit(points, iterations)
        self.last_residuals.append(fit.residual_px)
        if self.seen is None or fit.landmarks is None:
            return self.apply(fit)
        expr, jaw = self._calibrated(fit)
        jaw = self._jaw_drive(fit, jaw, self._as_read(fit, expr))
        if jaw > fit.pose[6] + JAW_REFIT_MIN:
            return self.apply(self._fit_with_jaw(points, jaw))
        return self.apply(fit, jaw_drive=jaw)

    def _fit_with_jaw(self, points: np.ndarray, jaw: float) -> FitResult:
        """The fit carried on (JAW_REFIT_ITERATIONS) from where it stopped with its jaw held at
        the jaw drive's opening: the expression it read with its own, smaller jaw did not pay
        for what the opening jaw does to the rest of the mouth (renders of an opening jaw draw
        the corners in, and a grin read at the fit's jaw rendered narrow)."""
        f = self.fitter
        low, high = f.lower[6], f.upper[6]
        f.x[6] = f.lower[6] = f.upper[6] = jaw
        try:
            return f.fit(points, JAW_REFIT_ITERATIONS)
        finally:
            f.lower[6], f.upper[6] = low, high

    def _calibrated(self, fit: FitResult) -> tuple[np.ndarray, float]:
        """The fit's expression (E,) and jaw through the calibration, the lids left at 0 where
        they are read apart, the symmetric pairs averaged."""
        raw = fit.expr
        if self._eyes is not None and fit.landmarks is not None:
            # Read apart: their fitted readings must not count against the lids' closing limit.
            raw = raw.copy()
            raw[[i for eye in self._eyes for i in eye]] = 0.0
        expr, jaw = self.calibration.apply(raw, float(fit.pose[6]))
        for a, b in self._pairs:
            expr[a] = expr[b] = (expr[a] + expr[b]) / 2
        return expr, jaw

    def apply(self, fit: FitResult, jaw_drive: float | None = None) -> FitResult:
        """A raw fit (with this retargeter's neutral) -> the avatar's drive. jaw_drive: the jaw
        drive already read for this fit (fit reads it first, to decide whether to carry on)."""
        lids = self._eyes is not None and fit.landmarks is not None
        expr, jaw = self._calibrated(fit)
        if fit.landmarks is not None:
            face = self._as_read(fit, expr)
            if self._brows is not None:
                expr = self._brow_drive(fit, expr, face)
            jaw = self._jaw_drive(fit, jaw, face) if jaw_drive is None else jaw_drive
        pose = fit.pose.copy()
        pose[6] = jaw
        if lids:
            opening = self._eye_opening(fit)
            expr = self._lid_drive(expr, opening).astype(expr.dtype, copy=False)
            self._hold_gaze(pose, opening)
        if self.neutral is None:
            pose[0:3] = self._gaze_turn(fit.pose[0:3], float(pose[10]))
            return replace(fit, expr=expr, pose=pose)
        pose[0:3] = self._gaze_turn(rotation_vector(rodrigues(fit.pose[0:3]) @ self.neutral.root.T), float(pose[10]))
        if self._roll_ref is not None and fit.landmarks is not None:
            # The head roll MediaPipe reads is the eye line's tilt. The fit splits the driver's
            # eye-corner motion between the head's rotation and expression components, and what
            # expression takes (asymmetric squints, brows, lids) the avatar's drive does not
            # reproduce (its lids follow both eyes' mean opening); the driver's neutral rotation
            # taken off the root also tilts the avatar's eye line differently from the driver's
            # when the head pitches at a yaw. So the avatar's head is turned about the camera's
            # axis until its eye line leans as the driver's does, less the neutral's lean.
            pose[0:3] = self._level_eye_line(fit, expr, pose)
        return replace(fit, expr=expr, pose=pose, head_rotation=fit.pose[0:3].copy())

    def _gaze_turn(self, root: np.ndarray, yaw: float) -> np.ndarray:
        """Root rotation (3,) turned back about the vertical by the head turn the fit reads on
        the avatar's renders when its eyes look at gaze yaw (calibration.GazeResponse)."""
        gaze = self.calibration.gaze
        if gaze is None:
            return root
        return rotation_vector(rodrigues(np.array([0.0, -gaze.head_turn(yaw), 0.0])) @ rodrigues(root))

    def _level_eye_line(self, fit: FitResult, expr: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """The root rotation (3,) of pose turned about the camera axis so that the avatar's eye
        line (expr, pose, fit.translation) leans as fit.landmarks' does less the neutral's gap."""
        gap = _wrap(self._eye_line(fit.landmarks) - self._avatar_eye_line(expr, pose, fit.translation) - self._roll_ref)
        gap = float(np.clip(gap, -MAX_ROLL_FIX, MAX_ROLL_FIX))
        # Turning by phi about world z (the camera looks down -z, image y is world -y) turns the
        # image's lines by -phi.
        return rotation_vector(rodrigues(np.array([0.0, 0.0, -gap])) @ rodrigues(pose[0:3]))

    @classmethod
    def for_clip(cls, data: HeadModelData, K: np.ndarray, landmarks: Sequence[np.ndarray | None], fps: float,
                 neutral_frame: int | None = None, neutral_s: float = 1.0, shape: np.ndarray | None = None,
                 static_offset: np.ndarray | None = None, rest: bool = True,
                 mediapipe_landmarks: Sequence[np.ndarray | None] | None = None, **kwargs) -> "Retargeter":
        """A retargeter whose neutral is frame neutral_frame of a clip's tracked landmarks
        (positions in landmarks; None where no face); by default the clip's rest_frames, or
        with rest=False the frames of its first neutral_s seconds that have a face (the first
        face's when none does). mediapipe_landmarks: the same frames' 478 MediaPipe landmarks,
        when the model embeds fewer (rest_frames reads MediaPipe's indices). ValueError when the neutral frame has no face."""
        rt = cls(data, K, shape, static_offset, **kwargs)
        if neutral_frame is not None:
            if not 0 <= neutral_frame < len(landmarks) or landmarks[neutral_frame] is None:
                raise ValueError(f"frame {neutral_frame} has no tracked face to take as the neutral")
            picked = [landmarks[neutral_frame]]
        elif rest:
            picked = [landmarks[k] for k in rest_frames(mediapipe_landmarks or landmarks)]
        else:
            count = max(1, int(round(neutral_s * fps)))
            picked = [p for p in landmarks[:count] if p is not None]
            if not picked:
                picked = [next(p for p in landmarks if p is not None)]
        rt.set_neutral(picked)
        return rt

    def refit_all(self, landmarks: Sequence[np.ndarray | None], expr: np.ndarray, pose: np.ndarray,
                  translation: np.ndarray, iterations: int = 10,
                  fps: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refit a clip's landmarks (T entries, (L, 2+) or None) with the neutral; frames without a
        face hold the previous frame's result (the first face's before any). expr (T, E), pose
        (T, 15), translation (T, 3) are the original fits, used only for their shapes and for
        translation where there is no face. With fps, the result goes through the live tracker's
        jitter filter (One-Euro, TrackerParams' defaults) at that frame rate, so a clip drives the
        avatar as the webcam would. Returns the retargeted (expr, pose, translation)."""
        out_e, out_p, out_t = np.zeros_like(expr), np.zeros_like(pose), np.array(translation, copy=True)
        self.reset()
        e = out_e.shape[1]
        smooth = jitter_filter(TrackerParams(), e) if fps else None
        held = None
        first = None
        for k, pts in enumerate(landmarks):
            if pts is None:
                if smooth is not None:
                    smooth.reset()  # as the live tracker: a face found again starts afresh
                if held is not None:
                    out_e[k], out_p[k], out_t[k] = held
                continue
            fit = self.fit(np.asarray(pts, np.float64), iterations)
            held = (fit.expr, fit.pose, fit.translation)
            if smooth is not None:
                v = smooth(fit.vector(), k / fps)
                held = (v[:e], v[e:e + 15], v[e + 15:])
            out_e[k], out_p[k], out_t[k] = held
            if first is None:
                first = k
        if first is not None:
            out_e[:first], out_p[:first], out_t[:first] = out_e[first], out_p[first], out_t[first]
        return out_e, out_p, out_t


@dataclass
class TrackReport:
    """How well a video was tracked: frames, frames_with_face, residual_px per frame with a face
    (RMS reprojection error of the fit, pixels of the tracked frame), warnings: each fit_quality
    warning's kind ("face too small", ...) -> number of frames it was raised on, neutral_frames
    the frames the driver's neutral was measured on."""

    frames: int
    frames_with_face: int
    residual_px: np.ndarray
    warnings: dict[str, int]
    neutral_frames: int

    def summary(self) -> str:
        r = self.residual_px
        text = (f"face in {self.frames_with_face} of {self.frames} frames; fit residual median "
                f"{np.median(r):.2f} px, 90th percentile {np.percentile(r, 90):.2f} px" if len(r) else
                f"face in 0 of {self.frames} frames")
        for kind, count in self.warnings.items():
            text += f"; {kind} in {count} frames"
        return text


def track_motion(path, data: HeadModelData, params: TrackerParams | None = None, neutral_frame: int | None = None,
                 progress=None, shape: np.ndarray | None = None,
                 static_offset: np.ndarray | None = None) -> tuple[Motion, TrackReport]:
    """Track a video file into a Motion that puppeteers an avatar: landmarks of every frame
    (MediaPipe video mode), the driver's neutral from frame neutral_frame (default: the first
    params.neutral_s seconds of face), every frame refitted with it, calibrated, and smoothed
    (One-Euro, when params.filter). Translations are relative to the first frame with a face.
    progress(done, total) after each decoded frame. OSError when the video cannot be read,
    ValueError when no frame has a face or the neutral frame has none."""
    import math

    from savatar.core.drive.face_landmarks import FaceLandmarker
    from savatar.core.drive.fit_quality import fit_warnings
    from savatar.core.drive.tracking import VideoReader, intrinsics_for, mediapipe_indices

    params = params or TrackerParams()
    index = mediapipe_indices(data)
    full: list[np.ndarray | None] = []
    light: list[list[str]] = []
    size = None
    with VideoReader(path) as video, FaceLandmarker(static_images=False) as landmarker:
        fps = video.fps
        for i, rgb in video.frames():
            size = rgb.shape[1], rgb.shape[0]
            pts = landmarker(rgb)
            full.append(pts)
            # Brightness needs the frame, which is not kept: checked now, the rest after the fit.
            light.append([w for w in fit_warnings(pts, np.zeros(3), math.nan, rgb) if "dark" in w]
                         if pts is not None else [])
            if progress is not None:
                progress(i + 1, video.count)
    if not full:
        raise OSError(f"{path}: no frames could be read")
    if all(p is None for p in full):
        raise ValueError(f"{path}: no face found in any of its {len(full)} frames")
    K = intrinsics_for(size[0], size[1], params.fov_y_deg)
    marks = [p[index, :2] if p is not None else None for p in full]
    fit_params = replace(params, filter=False)
    rt = Retargeter.for_clip(data, K, marks, fps, neutral_frame, params.neutral_s, shape, static_offset,
                             mediapipe_landmarks=full, params=fit_params)
    e = len(data.expr_names)
    smooth = jitter_filter(params, e)
    rows, residuals, counts = [], [], {}
    for k, pts in enumerate(marks):
        if pts is None:
            rows.append(None)
            rt.reset()
            smooth.reset()
            continue
        fit = rt.fit(pts, iterations=fit_params.iterations * 2)
        residuals.append(fit.residual_px)
        for w in fit_warnings(full[k], fit.camera_rotation(), fit.residual_px) + light[k]:
            kind = w.split(" (")[0]
            counts[kind] = counts.get(kind, 0) + 1
        v = fit.vector()
        if params.filter:
            v = smooth(v, k / fps)
        rows.append(v)
    first = next(k for k, r in enumerate(rows) if r is not None)
    held = rows[first]
    table = []
    for r in rows:
        held = r if r is not None else held
        table.append(held)
    table = np.stack(table).astype(np.float32)
    trans = table[:, e + 15:] - table[first, e + 15:]
    motion = Motion(float(fps), table[:, :e], table[:, e:e + 15], trans, list(data.expr_names))
    report = TrackReport(len(full), sum(p is not None for p in marks), np.asarray(residuals), counts,
                         rt.neutral.frames if rt.neutral is not None else 0)
    return motion, report

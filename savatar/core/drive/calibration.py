"""Calibration of the tracker's expression readings against renders of the head model.

The tracker reads a face as the head model's expression coefficients that move the model's
landmarks onto MediaPipe's. A render of the avatar driven with "smile 1.0" does not read as
smile 1.0: the Gaussians, the light baked into them and MediaPipe's own priors make the smile
MediaPipe sees on the render smaller (about half), blinks partial, and so on. So a person's
reading, sent to the avatar as it is, makes a face that reads smaller than the person's.

The response of each component is measured (measure_response): render the avatar at rest and
with one component at a few levels, track the renders with the neutral render as the driver's
neutral, and take the slope of the reading over the level. Driving the avatar with the reading
divided by that slope makes its render read like the driver (a gain per component, from the
head model's renders only: never from the clips that judge it). The measured gains of the open
head's default avatar are OPEN_HEAD_GAINS (scripts/calibrate_tracking.py measures them again).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from savatar.core.head.head_model import HeadModelData

JAW = "jaw"  # the jaw opening (pose[6], radians) is calibrated like a component
MAX_DRIVE = 2.5  # above 1 extrapolates the blendshape (the open head's are subtle: smile 1 is a slight smile)
GAIN_RANGE = (0.5, 4.0)  # a measured gain outside this is a failed measurement, not a response

# Measured by scripts/calibrate_tracking.py on the default avatar (gl renderer, 512x512, 50 degrees).
# Components missing here read too little on renders to measure (press, funnel, cheeks, sneer),
# or stop being read at all (a blink above about 0.5 renders as skin MediaPipe cannot place lids on).
OPEN_HEAD_GAINS: dict[str, float] = {
    'eyeSquint_L': 2.112, 'eyeSquint_R': 3.424, 'eyeWide_R': 3.837, 'browInnerUp': 2.38, 'browOuterUp_L': 3.204,
    'browOuterUp_R': 2.247, 'browDown_L': 2.838, 'browDown_R': 2.609, 'mouthSmile_L': 1.954, 'mouthSmile_R': 2.321,
    'mouthFrown_L': 2.258, 'mouthFrown_R': 2.682, 'mouthStretch_L': 2.106, 'mouthStretch_R': 1.964,
    'mouthPucker': 3.758, 'mouthUpperUp_L': 2.619, 'mouthUpperUp_R': 2.105, 'mouthRollUpper': 1.462,
    'mouthRight': 2.737, 'mouthDimple_L': 3.817, 'mouthDimple_R': 3.821, 'jaw': 1.087}


@dataclass
class ExpressionCalibration:
    """gains (E,) per expression component and jaw_gain: drive = reading x gain, expressions
    clipped to [0, MAX_DRIVE], jaw to [0, max_jaw] radians."""

    gains: np.ndarray
    jaw_gain: float = 1.0
    max_jaw: float = 0.6

    def apply(self, expr: np.ndarray, jaw: float) -> tuple[np.ndarray, float]:
        """(expr (E,), jaw radians) read by the tracker -> what drives the avatar."""
        e = np.clip(np.asarray(expr, np.float64) * self.gains, 0.0, MAX_DRIVE)
        return e.astype(np.asarray(expr).dtype, copy=False), float(np.clip(jaw * self.jaw_gain, 0.0, self.max_jaw))

    @classmethod
    def identity(cls, num_expr: int) -> "ExpressionCalibration":
        return cls(np.ones(num_expr), 1.0)

    @classmethod
    def from_gains(cls, names: Sequence[str], gains: dict[str, float]) -> "ExpressionCalibration":
        """Gains by component name (missing names keep 1); JAW for the jaw."""
        return cls(np.array([gains.get(n, 1.0) for n in names]), gains.get(JAW, 1.0))


def default_calibration(data: HeadModelData) -> ExpressionCalibration:
    """The measured gains for the open head; other models (FLAME) are not measured: identity."""
    if data.name == "open-head":
        return ExpressionCalibration.from_gains(data.expr_names, OPEN_HEAD_GAINS)
    return ExpressionCalibration.identity(len(data.expr_names))


# read(expr (E,), jaw radians) -> the tracker's reading of a render of the avatar so driven:
# (expr (E,), jaw), or None when no face was found on the render.
Reader = Callable[[np.ndarray, float], "tuple[np.ndarray, float] | None"]


def measure_gains(read: Reader, names: Sequence[str], levels: Sequence[float] = (0.4, 0.7, 1.0),
                  jaw_levels: Sequence[float] = (0.1, 0.2, 0.3)) -> dict[str, float]:
    """Per component (and JAW): level / reading, as the least-squares slope through the origin
    of the reading over the levels; components whose reading does not grow (slope under
    1 / GAIN_RANGE[1]) or is out of GAIN_RANGE are left out (gain 1)."""
    out: dict[str, float] = {}
    for k, name in enumerate([*names, JAW]):
        got, asked = [], []
        for a in (jaw_levels if name == JAW else levels):
            e = np.zeros(len(names))
            jaw = 0.0
            if name == JAW:
                jaw = a
            else:
                e[k] = a
            r = read(e, jaw)
            if r is None:
                continue
            got.append(r[1] if name == JAW else r[0][k])
            asked.append(a)
        if not asked:
            continue
        a, g = np.asarray(asked), np.asarray(got)
        slope = float((a * g).sum() / (a * a).sum())
        if slope <= 0 or not GAIN_RANGE[0] <= 1.0 / slope <= GAIN_RANGE[1]:
            continue
        out[name] = round(1.0 / slope, 3)
    return out

"""Closed loop: render the default Gaussian avatar with the gl renderer under known parameters,
track the renders with FaceTracker (MediaPipe + fit) through the render camera's exact K, and
recover jaw opening, blink, smile and head yaw.

The tolerances come from measuring this loop (512x512, white background, camera 0.55 m in front
of the face, 30 degrees vertical field of view). The loop is not exact even at rest: the default
avatar is an untrained, light-baked splat whose face MediaPipe reads with an RMS error of about
7 px against the model's own landmarks, which the fit absorbs partly with expressions (about 8
degrees of head pitch and mouthRollLower / eyeWide near 1 on the neutral face). So each check
compares against the tracked neutral face or checks a direction, not only absolute values.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from savatar.core.drive.face_landmarks import FaceLandmarker
from savatar.core.drive.tracking import FaceTracker, TrackerParams
from savatar.core.build.default_avatar import default_avatar
from savatar.core.gaussians.rig import Rig
from savatar.core.render.camera import orbit_camera
from savatar.gl.splat_renderer import SplatRenderer

SIZE = 512
CAMERA = orbit_camera(0.0, 0.0, 0.55, target=(0.0, -0.02, 0.0), width=SIZE, height=SIZE, fov_y_deg=30.0)


def _expr(names, **values) -> np.ndarray:
    e = np.zeros(len(names), np.float32)
    for k, v in values.items():
        e[names.index(k)] = v
    return e


def _pose(jaw: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    p = np.zeros(15, np.float32)
    p[1] = math.radians(yaw_deg)  # root about +y: the avatar turns to its left (+x) for positive yaw
    p[6] = jaw
    return p


@pytest.fixture(scope="module")
def tracked():
    """Case name -> FitResult of the render with those parameters."""
    avatar = default_avatar()
    rig = Rig.of(avatar)
    names = list(rig.data.expr_names)
    cases = {
        "neutral": (None, _pose()),
        "jaw 0.15": (None, _pose(jaw=0.15)),
        "jaw 0.3": (None, _pose(jaw=0.3)),
        "blink 0.5": (_expr(names, eyeBlink_L=0.5, eyeBlink_R=0.5), _pose()),
        "blink 1": (_expr(names, eyeBlink_L=1.0, eyeBlink_R=1.0), _pose()),
        "smile 1": (_expr(names, mouthSmile_L=1.0, mouthSmile_R=1.0), _pose()),
        "yaw -25": (None, _pose(yaw_deg=-25.0)),
        "yaw 25": (None, _pose(yaw_deg=25.0)),
    }
    renderer = SplatRenderer()
    params = TrackerParams(static_images=True, filter=False)
    out = {}
    with FaceLandmarker(static_images=True) as landmarker:
        for name, (expr, pose) in cases.items():
            expr = np.zeros(len(names), np.float32) if expr is None else expr
            rgb = renderer.render(rig.world(expr, pose, np.zeros(3, np.float32)), CAMERA, (1.0, 1.0, 1.0)).rgb
            image = (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
            # A fresh tracker per image, so every fit starts from solvePnP rather than the last case.
            tracker = FaceTracker(rig.data, params, K=CAMERA.K, shape=avatar.shape.numpy(), landmarker=landmarker)
            fit = tracker.process(image, 0.0)
            assert fit.status == "ok", name
            out[name] = fit
    return out, names


def test_jaw_opening_is_recovered(tracked):
    fits, _ = tracked
    jaw = {j: float(fits[name].pose[6]) for j, name in ((0.0, "neutral"), (0.15, "jaw 0.15"), (0.3, "jaw 0.3"))}
    # Measured 0.007, 0.138, 0.192 (0.013, 0.140, 0.219 before the inside of the lip curtain's
    # corners was hidden, build.curtain_sides). The largest error (0.11 at 0.3 rad) is a shortfall:
    # MediaPipe moves the chin (landmark 152) down less than the render moved it, so the fit
    # explains part of the wide lip gap with mouthLowerDown (saturated at 1) instead of jaw
    # rotation. 0.13 rad keeps 0.02 of margin over that; monotonic steps of at least 0.05.
    for truth, got in jaw.items():
        assert abs(got - truth) < 0.13, jaw
    assert jaw[0.15] - jaw[0.0] > 0.05 and jaw[0.3] - jaw[0.15] > 0.05, jaw


def _blink(fit, names) -> float:
    return float(fit.expr[names.index("eyeBlink_L")] + fit.expr[names.index("eyeBlink_R")]) / 2


def test_half_blink_is_recovered(tracked):
    fits, names = tracked
    # Measured mean eyeBlink 0.48 open, 0.70 half closed (gains of 0.1 to 0.3 at 0.4 and 0.7 m
    # and on grey).
    # The open eyes already read as half shut: the untrained avatar's eyes render as thin dark
    # slits (MediaPipe lid gap 11-13 px where the model's is 19 px). 0.1 is under half the gap.
    assert _blink(fits["blink 0.5"], names) > _blink(fits["neutral"], names) + 0.1


@pytest.mark.xfail(strict=True, reason="the raw fit reads the avatar's closed lids as a blink of 0.57 against "
                                       "0.38 open (the retargeter reads them from the eyes' opening instead)")
def test_closed_eyes_are_recovered(tracked):
    fits, names = tracked
    # Measured mean eyeBlink 0.38 open, 0.60 at blink 0.5, 0.57 closed (2026-12-07). Since the
    # default avatar's upper lids carry a wide lash line MediaPipe finds the closed lids (before,
    # they rendered as skin and it put the lid contours on the brows: 0.48 open, 0.11 closed), but
    # the raw fit explains part of the closing by dropping eyeWide (0.47 open, 0 closed), which
    # the neutral face's fit had taken up. The retargeting fit reads lids from the eyes' opening
    # (test_tracking_puppet recovers blinks to 0.9). Strict, so it is noticed when this improves.
    assert _blink(fits["blink 1"], names) > _blink(fits["neutral"], names) + 0.3


def test_smile_is_recovered(tracked):
    fits, names = tracked

    def smile(fit):
        return float(fit.expr[names.index("mouthSmile_L")] + fit.expr[names.index("mouthSmile_R")]) / 2
    # Measured mean mouthSmile 0.00 neutral, 0.21 smiling (0.43 on the left, 0 on the right; the
    # mouth corners do spread symmetrically, 93 -> 115 px apart, and the fit splits the motion
    # among correlated mouth expressions). 0.1 is half the measured gain. Not specific: opening
    # the jaw 0.15 rad alone also reads as mouthSmile 0.14.
    assert smile(fits["smile 1"]) > smile(fits["neutral"]) + 0.1


def test_head_yaw_is_recovered(tracked):
    fits, _ = tracked
    # The render camera looks along world -z with y up at a face facing +z, the tracking world's
    # orientation, so the recovered root rotation compares directly with the rendered one.
    for truth, name in ((-25.0, "yaw -25"), (0.0, "neutral"), (25.0, "yaw 25")):
        got = math.degrees(float(fits[name].pose[1]))
        # Measured -23.7, -0.2, +23.0 (errors up to 2 degrees, from the silhouette landmarks
        # sliding over the cheek as the head turns); 5 degrees leaves more than double.
        assert abs(got - truth) < 5.0, (name, got)
        if truth:
            assert math.copysign(1.0, got) == math.copysign(1.0, truth), (name, got)

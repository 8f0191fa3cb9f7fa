"""Puppeteering on synthetic ground truth: the default avatar driven with known expression and
pose curves, rendered (gl), tracked back through MediaPipe and the retargeting fit; each curve
must come back (correlation over the clip), and a constant offset in the driver's neutral face
(an expression held throughout, a tilted head) must not reach the avatar.

Blinks go to 0.9: since the default avatar's upper lids carry a lash line a few millimetres wide,
MediaPipe finds closed lids on its renders (with the thin line of before, lids closed past about
half rendered as skin on which it placed open lids, and blinks here stopped at 0.45).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from savatar.core.drive.calibration import ExpressionCalibration, default_calibration
from savatar.core.drive.face_landmarks import FaceLandmarker
from savatar.core.drive.retarget import Retargeter, measure_neutral
from savatar.core.drive.tracking import (TRACKING_VIEWMAT, FaceFitter, LandmarkModel, intrinsics_for, rodrigues,
                                         rotation_vector)
from savatar.core.build.default_avatar import default_avatar
from savatar.core.gaussians.rig import Rig
from savatar.core.reenact.face_signals import correlation
from savatar.core.render.camera import Camera

SIZE = 512
YAW_DEG = 15.0
FRAMES = 16
K = intrinsics_for(SIZE, SIZE)
CAMERA = Camera(TRACKING_VIEWMAT, K, SIZE, SIZE)
TRANSLATION = np.array([0.0, 0.0, -0.42], np.float32)  # a webcam's distance: about 190 px between the cheeks


def _curves() -> dict[str, np.ndarray]:
    """Known curves over FRAMES frames, each a different rhythm so they do not move together;
    every one is 0 at frame 0 (the neutral frame)."""
    t = np.arange(FRAMES) / FRAMES
    bump = lambda k, phase=0.0: (1 - np.cos(2 * np.pi * (k * t + phase))) / 2  # noqa: E731
    return {"jaw": 0.2 * bump(1), "smile": 0.9 * bump(2), "brow": 0.9 * bump(1, 0.0) * bump(3),
            "blink": 0.9 * bump(3, 0.0) * (t > 0.3), "roll": np.radians(12.0) * np.sin(2 * np.pi * t),
            "yaw": np.radians(YAW_DEG) * np.sin(4 * np.pi * t)}


def _drive(names, c: dict[str, np.ndarray], k: int, offset_expr: dict[str, float], roll0: float):
    e = np.zeros(len(names), np.float32)
    for name, v in offset_expr.items():
        e[names.index(name)] = v
    for side in ("L", "R"):
        e[names.index(f"mouthSmile_{side}")] += c["smile"][k]
        e[names.index(f"eyeBlink_{side}")] += c["blink"][k]
    e[names.index("browInnerUp")] += c["brow"][k]
    pose = np.zeros(15, np.float32)
    # Roll about the camera axis (z), then yaw: what the recovered root's z and y components read.
    r = rodrigues(np.array([0.0, c["yaw"][k], 0.0])) @ rodrigues(np.array([0.0, 0.0, c["roll"][k] + roll0]))
    pose[0:3] = rotation_vector(r)
    pose[6] = c["jaw"][k]
    return e, pose


def _track(offset_expr: dict[str, float], roll0: float):
    from savatar.gl.splat_renderer import SplatRenderer

    avatar = default_avatar()
    rig = Rig.of(avatar)
    names = list(rig.data.expr_names)
    c = _curves()
    renderer = SplatRenderer()
    marks = []
    with FaceLandmarker(static_images=True) as landmarker:
        for k in range(FRAMES):
            e, pose = _drive(names, c, k, offset_expr, roll0)
            rgb = renderer.render(rig.world(e, pose, TRANSLATION), CAMERA, (1.0, 1.0, 1.0)).rgb
            pts = landmarker((np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))
            assert pts is not None, f"no face on render {k}"
            marks.append(pts[:, :2])
    # Readings as fitted (gain 1, no limits), but the eyelids read as the product reads them:
    # from how far the eyes are open, through the avatar's lid curve (retarget's lid drive).
    calibration = ExpressionCalibration.identity(len(names))
    calibration.lids = default_calibration(rig.data).lids
    rt = Retargeter(rig.data, K, avatar.shape.numpy(), avatar.static_offset.numpy(), calibration=calibration)
    rt.set_neutral([marks[0]])
    fits = []
    for pts in marks:
        rt.reset()  # each render on its own, as in the closed loop test
        fits.append(rt.fit(pts, iterations=30))
    return c, fits, names


@pytest.fixture(scope="module")
def plain():
    return _track({}, 0.0)


@pytest.fixture(scope="module")
def offset():
    # The driver's face at rest already smiles a little, lowers the brows and tilts the head.
    return _track({"mouthSmile_L": 0.3, "mouthSmile_R": 0.3, "browDown_L": 0.4, "browDown_R": 0.4}, math.radians(10.0))


def _recovered(fits, names) -> dict[str, np.ndarray]:
    ex = lambda *n: np.array([np.mean([f.expr[names.index(x)] for x in n]) for f in fits])  # noqa: E731
    rot = np.array([f.pose[0:3] for f in fits])
    return {"jaw": np.array([f.pose[6] for f in fits]), "smile": ex("mouthSmile_L", "mouthSmile_R"),
            "brow": ex("browInnerUp"), "blink": ex("eyeBlink_L", "eyeBlink_R"),
            "roll": rot[:, 2], "yaw": rot[:, 1]}


# Measured on this CPU (seen basis and seen rest, 2026-12-07). Brows: turning the head 15 degrees
# still reads as some browDown (plain 0.795, offset 0.909). Before the seen rest (the rest face's
# landmarks where MediaPipe places them in depth, calibration.seen_rest) it read as up to 1.0 of
# one side's browDown plus browInnerUp, brows 0.570 and 0.591 and the plain clip's smile 0.902:
# MediaPipe places the avatar's brows about 3 mm behind and its mouth corners 7 mm in front of
# the mesh points they are embedded at, so under yaw the fit's rigid motion left pixels on them
# that only expression components explained. Blinks, read from the eyes' opening, come back at
# 0.97 and 0.98 (offset).
_SHORT = {("plain", "brow"): 0.795, ("offset", "brow"): 0.909}


def _cases():
    for case in ("plain", "offset"):
        for key in _curves():
            got = _SHORT.get((case, key))
            marks = [pytest.mark.xfail(strict=True, reason=f"measured {got:.3f}: brow and expression readings "
                                                           "take up the head's yaw (see _SHORT)")] if got else []
            yield pytest.param(case, key, marks=marks, id=f"{case}-{key}")


@pytest.mark.parametrize("case, key", list(_cases()))
def test_each_curve_is_recovered(case, key, request):
    c, fits, names = request.getfixturevalue(case)
    got = _recovered(fits, names)[key]
    r = correlation(c[key], got)
    assert r > 0.95, (case, key, r, np.round(got, 3).tolist())


def _mean(fits, names, *components) -> np.ndarray:
    return np.array([np.mean([f.expr[names.index(n)] for n in components]) for f in fits])


def test_constant_offset_in_the_neutral_does_not_reach_the_avatar(offset, plain):
    c, fits, names = offset
    got = _recovered(fits, names)
    # The neutral frame (frame 0) is the avatar's rest face: no smile, no lowered brows, no tilt.
    f0 = fits[0]
    assert np.abs(f0.expr).max() < 0.05, np.round(f0.expr, 3)
    assert abs(math.degrees(got["roll"][0])) < 1.0
    # The tilt held throughout is gone from every frame: roll follows the curve around zero.
    assert abs(np.degrees(np.mean(got["roll"] - c["roll"]))) < 2.0
    # The held smile and lowered brows add nothing to what the same curves read without them
    # (the plain clip): over the clip, the offset clip reads no more of them. Compared with the
    # plain clip, not with zero, because turning the head alone reads as browDown (see _SHORT).
    # Measured -0.01 (browDown) and -0.25 (smile: the held smile plus the curve go past where
    # renders read more smile); without the neutral (both clips fitted raw) +0.09 and +0.12.
    _, plain_fits, _ = plain
    for components in (("browDown_L", "browDown_R"), ("mouthSmile_L", "mouthSmile_R")):
        leak = float(np.mean(_mean(fits, names, *components) - _mean(plain_fits, names, *components)))
        assert leak < 0.05, (components, leak)


def test_identity_offset_maps_to_rest_on_synthetic_landmarks():
    """Without rendering: a driver whose rest landmarks differ from the model's by a random
    identity offset (2 mm per coordinate) and whose head is tilted 8 degrees reads as the rest
    face at rest, and reads a known expression as it reads on the model's own face."""
    from savatar.core.head.open_head import load_open_head_data

    data = load_open_head_data()
    names = list(data.expr_names)
    k = intrinsics_for(640, 480)
    person = LandmarkModel(data, landmark_offset=np.random.default_rng(0).normal(scale=0.002, size=(478, 3)))
    project = FaceFitter(data, k)._project
    tilt = rodrigues(np.array([0.05, 0.1, math.radians(8.0)]))

    def points(e, jaw=0.0):
        return project(person.evaluate(tilt, np.array([0.01, 0.02, -0.45]), np.array([jaw, 0.0, 0.0]), np.zeros(2), e))[0]

    rest = np.zeros(len(names))
    raw = FaceFitter(data, k).fit(points(rest), iterations=30)
    assert raw.expr.max() > 0.1  # without the neutral, the identity difference reads as expression
    neutral = measure_neutral(data, k, [points(rest)])
    rt = Retargeter(data, k, calibration=ExpressionCalibration.identity(len(names)), neutral=neutral, seen=False)
    at_rest = rt.fit(points(rest), iterations=30)
    assert np.abs(at_rest.expr).max() < 1e-3 and np.abs(at_rest.pose[0:3]).max() < 1e-4
    e = rest.copy()
    brows = [names.index("browDown_L"), names.index("browDown_R")]
    e[names.index("mouthSmile_L")], e[brows] = 0.7, 0.5
    rt.reset()
    got = rt.fit(points(e, 0.2), iterations=30)
    assert abs(got.expr[names.index("mouthSmile_L")] - 0.7) < 0.05
    assert np.all(np.abs(got.expr[brows] - 0.5) < 0.05)
    assert abs(got.pose[6] - 0.2) < 0.01
    # Lowered brows drive the avatar as a pair (retarget.SYMMETRIC): one brow lowered alone
    # lowers both half as far.
    e[brows] = [0.0, 0.5]
    rt.reset()
    got = rt.fit(points(e, 0.2), iterations=30)
    assert np.all(np.abs(got.expr[brows] - 0.25) < 0.05)


def test_eyes_turning_alone_do_not_turn_the_avatars_head():
    """MediaPipe re-places the whole face with the irises: on renders of the avatar looking
    aside with its head still, the fit reads the head turning with the eyes (up to 0.016 rad),
    and the avatar's own renders would add that turn again. The drive turns the head back by
    the response measured on the avatar (calibration.GazeResponse), so eyes alone leave the
    driven head where it was."""
    from savatar.core.drive.calibration import OPEN_HEAD_REST
    from savatar.gl.splat_renderer import SplatRenderer

    avatar = default_avatar()
    rig = Rig.of(avatar)
    names = list(rig.data.expr_names)
    rest = np.array([OPEN_HEAD_REST.get(n, 0.0) for n in names], np.float32)
    renderer = SplatRenderer()
    marks = []
    with FaceLandmarker(static_images=True) as landmarker:
        for yaw in (0.0, -0.4, -0.2, 0.2, 0.4):
            pose = np.zeros(15, np.float32)
            pose[10] = pose[13] = yaw
            rgb = renderer.render(rig.world(rest, pose, TRANSLATION), CAMERA, (1.0, 1.0, 1.0)).rgb
            pts = landmarker((np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))
            assert pts is not None
            marks.append(pts)
    rt = Retargeter(rig.data, K, avatar.shape.numpy(), avatar.static_offset.numpy())
    assert rt.calibration.gaze is not None
    rt.set_neutral([marks[0]])
    fitted, driven = [], []
    for pts in marks:
        rt.reset()
        fit = rt.fit(pts, iterations=30)
        fitted.append(fit.head_rotation[1])
        driven.append(fit.pose[1])
    assert np.ptp(fitted) > 0.012, np.round(fitted, 4)  # the fit reads the eyes as a head turn
    # Measured: fitted over 0.0196, driven over 0.0096, most of it at gaze -0.4 (0.007), where the
    # fit reads the eyes turned about 0.6 as far and the head is turned back by the response at
    # that smaller turn (which is also all the avatar's own renders add again).
    assert np.ptp(driven) < 0.6 * np.ptp(fitted) and np.ptp(driven) < 0.011, np.round(driven, 4)

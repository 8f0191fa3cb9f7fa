"""The retargeted avatar's eye line (the head roll MediaPipe reads) leans as the driver's does,
on synthetic ground truth: a person with a face of his own, resting with his head turned and
pitched (a camera off to the side and above), nodding and tilting from there."""
from __future__ import annotations

import math

import numpy as np
import pytest

from savatar.core.drive.calibration import ExpressionCalibration
from savatar.core.drive.retarget import EYE_CORNERS, MAX_ROLL_FIX, Retargeter
from savatar.core.drive.tracking import FaceFitter, LandmarkModel, intrinsics_for, rodrigues, rotation_vector
from savatar.core.head.open_head import load_open_head_data

K = intrinsics_for(640, 480)
TRANSLATION = np.array([0.03, -0.02, -0.45])


@pytest.fixture(scope="module")
def data():
    return load_open_head_data()


def _eye_line_deg(points: np.ndarray) -> float:
    """MediaPipe's head roll (savatar.core.reenact.face_signals), computed here on its own."""
    p = np.asarray(points)[list(EYE_CORNERS), :2]
    d = p[2:].mean(0) - p[:2].mean(0)
    return math.degrees(math.atan2(d[1], d[0]))


def _rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The head turned by yaw, pitched and rolled about its own axes (degrees)."""
    r = np.radians([pitch, yaw, roll])
    return (rodrigues(np.array([0.0, r[1], 0.0])) @ rodrigues(np.array([r[0], 0.0, 0.0]))
            @ rodrigues(np.array([0.0, 0.0, r[2]])))


@pytest.mark.parametrize("rest_deg", [(12.0, 15.0, 0.0), (-8.0, -20.0, 6.0)])
def test_avatar_eye_line_leans_as_the_drivers_less_his_resting_tilt(data, rest_deg):
    rng = np.random.default_rng(5)
    person = LandmarkModel(data, landmark_offset=rng.normal(scale=0.0008, size=(478, 3)))
    project = FaceFitter(data, K)._project
    avatar = LandmarkModel(data)

    def driver(pitch: float, yaw: float, roll: float) -> np.ndarray:
        r = _rotation(rest_deg[0] + pitch, rest_deg[1] + yaw, rest_deg[2] + roll)
        return project(person.evaluate(r, TRANSLATION, np.zeros(3), np.zeros(2), np.zeros(avatar.num_expr)))[0]

    rt = Retargeter(data, K, calibration=ExpressionCalibration.identity(avatar.num_expr), seen=False)
    rt.set_neutral([driver(0.0, 0.0, 0.0)])
    moves = [(0.0, 0.0, 0.0), (15.0, 0.0, 0.0), (-15.0, 0.0, 0.0), (10.0, 10.0, 0.0), (-10.0, -10.0, 4.0),
             (0.0, 0.0, -5.0), (12.0, -8.0, 3.0)]
    gaps, plain = [], []
    for move in moves:
        pts = driver(*move)
        fit = rt.fit(pts, iterations=30)
        drive = avatar.evaluate(rodrigues(fit.pose[0:3]), fit.translation, fit.pose[6:9], fit.pose[9:11], fit.expr)
        gaps.append(_eye_line_deg(project(drive)[0]) - _eye_line_deg(pts))
        # The root with only the neutral's rotation taken off, as before the eye line was read.
        root = rotation_vector(rodrigues(fit.head_rotation) @ rt.neutral.root.T)
        before = avatar.evaluate(rodrigues(root), fit.translation, fit.pose[6:9], fit.pose[9:11], fit.expr)
        plain.append(_eye_line_deg(project(before)[0]) - _eye_line_deg(pts))
    gaps = np.array(gaps)
    # Nodding at a turn leans the driver's eye line on the image; the avatar's leans with it.
    assert np.ptp(gaps) < 0.2, gaps
    # What is left is the driver's resting lean: the avatar at his rest holds its own eye line.
    rest = _eye_line_deg(project(avatar.evaluate(np.eye(3), rt.fit(driver(0, 0, 0), 30).translation,
                                                 np.zeros(3), np.zeros(2), np.zeros(avatar.num_expr)))[0])
    assert gaps[0] + _eye_line_deg(driver(0, 0, 0)) == pytest.approx(rest, abs=0.2)
    # The case needs the eye line: the neutral's rotation taken off alone leaves the lean wrong.
    assert np.ptp(plain) > 1.0, plain


def test_a_misplaced_eye_line_turns_the_avatar_no_more_than_the_limit(data):
    avatar = LandmarkModel(data)
    project = FaceFitter(data, K)._project
    e = np.zeros(avatar.num_expr)
    rest = project(avatar.evaluate(np.eye(3), TRANSLATION, np.zeros(3), np.zeros(2), e))[0]
    rt = Retargeter(data, K, calibration=ExpressionCalibration.identity(avatar.num_expr), seen=False)
    rt.set_neutral([rest])
    pts = rest.copy()
    pts[[EYE_CORNERS[2], EYE_CORNERS[3]], 1] -= 40.0  # the left eye found 40 px too high
    fit = rt.fit(pts, iterations=30)

    def lean(root: np.ndarray) -> float:
        x = avatar.evaluate(rodrigues(root), fit.translation, fit.pose[6:9], fit.pose[9:11], fit.expr)
        return _eye_line_deg(project(x)[0]) - _eye_line_deg(rest)
    seen = _eye_line_deg(pts) - _eye_line_deg(rest)
    fitted = lean(rotation_vector(rodrigues(fit.head_rotation) @ rt.neutral.root.T))
    limit = math.degrees(MAX_ROLL_FIX)
    assert seen < fitted - limit  # the eye line leans further than the fit's head does
    # The avatar is turned towards it by MAX_ROLL_FIX and no further.
    assert lean(fit.pose[0:3]) - fitted == pytest.approx(-limit, abs=0.1)

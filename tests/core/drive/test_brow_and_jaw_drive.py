"""The avatar's brows and jaw driven by how high the driver's brows sit and how far his lips part
(retarget's brow and jaw drives), on synthetic ground truth: a person with heavier, lower brows
than the head model's raises and lowers them and opens his mouth by known amounts, alone and under
a grin."""
from __future__ import annotations

import numpy as np
import pytest

from savatar.core.drive.calibration import (AVATAR_OPENING, BROW_EYES, BROWS, INNER_LIPS, brow_height,
                                           default_calibration, lip_gap, mouth_opening, seen_offset)
from savatar.core.drive.retarget import BROWS_DOWN, BROWS_UP, LIP_SHARE, Retargeter
from savatar.core.drive.tracking import FaceFitter, LandmarkModel, intrinsics_for, rodrigues
from savatar.core.head.open_head import load_open_head_data

K = intrinsics_for(640, 480)


@pytest.fixture(scope="module")
def data():
    return load_open_head_data()


def test_brow_height_is_the_brow_lines_height_over_the_eye_distance():
    pts = np.zeros((478, 2))
    for eye, x in zip(BROW_EYES, (100.0, 160.0)):  # eye centres 60 px apart, corners +-10 px
        pts[eye[0]], pts[eye[1]] = (x - 10, 200.0), (x + 10, 200.0)
    for brow, x in zip(BROWS, (100.0, 160.0)):
        pts[list(brow)] = (x, 200.0 - 24.0)
    assert brow_height(pts) == pytest.approx(24.0 / 60.0)
    moved = 2.0 * pts + np.array([30.0, -7.0])  # the size and place of the face do not count
    assert brow_height(moved) == pytest.approx(24.0 / 60.0)
    pts[list(BROWS[1])] = (160.0, 200.0 - 36.0)  # one brow raised: the mean of both
    assert brow_height(pts) == pytest.approx(30.0 / 60.0)
    assert brow_height(pts[:100]) is None
    assert brow_height(pts[:300], index=np.arange(300)) is None


def test_lip_gap_is_the_inner_lips_distance():
    pts = np.zeros((478, 2))
    pts[INNER_LIPS[0]], pts[INNER_LIPS[1]] = (130.0, 300.0), (133.0, 304.0)
    assert lip_gap(pts) == pytest.approx(5.0)
    order = np.arange(478)[::-1]  # points listed in another order, with their MediaPipe indices
    assert lip_gap(pts[order], index=order) == pytest.approx(5.0)
    assert lip_gap(pts[:10]) is None
    for eye, x in zip(BROW_EYES, (100.0, 150.0)):  # eye centres 50 px apart: the opening is 5 / 50
        pts[eye[0]], pts[eye[1]] = (x - 10, 200.0), (x + 10, 200.0)
    assert mouth_opening(pts) == pytest.approx(0.1)
    assert mouth_opening(3.0 * pts) == pytest.approx(0.1)


def _heavy_browed_person(data, seen: tuple[np.ndarray, np.ndarray] | None = None) -> LandmarkModel:
    """A driver whose brows sit 1.5 mm lower than the head model's (and whose face differs a
    little everywhere): a constant difference that must not reach the avatar as a frown."""
    offset = np.random.default_rng(5).normal(scale=0.0004, size=(478, 3))
    for brow in BROWS:
        offset[list(brow), 1] -= 0.0015
    return LandmarkModel(data, landmark_offset=offset, expr_offset=None if seen is None else seen[0],
                         jaw_offset=None if seen is None else seen[1])


def _points(data, person: LandmarkModel, levels: dict[str, float], rotation_deg, jaw: float = 0.0) -> np.ndarray:
    e = np.zeros(len(data.expr_names))
    for name, value in levels.items():
        e[data.expr_names.index(name)] = value
    xw = person.evaluate(rodrigues(np.radians(rotation_deg)), np.array([0.0, 0.0, -0.45]), np.array([jaw, 0.0, 0.0]),
                         np.zeros(2), e)
    return FaceFitter(data, K)._project(xw)[0]


@pytest.mark.parametrize("rotation_deg", [(0.0, 0.0, 0.0), (6.0, 18.0, -8.0)])
def test_brows_follow_the_drivers_whatever_the_mouth_does(data, rotation_deg):
    person = _heavy_browed_person(data)
    rt = Retargeter(data, K, calibration=default_calibration(data), seen=False)
    rt.set_neutral([_points(data, person, {}, rotation_deg)])
    names = list(data.expr_names)
    up, down = [names.index(n) for n in BROWS_UP], [names.index(n) for n in BROWS_DOWN]
    grin = {"mouthSmile_L": 1.5, "mouthSmile_R": 1.5, "cheekSquint_L": 1.0, "cheekSquint_R": 1.0}
    for level in (-0.8, -0.3, 0.0, 0.4, 1.0):
        brows = {n: level for n in BROWS_UP} if level > 0 else {n: -level for n in BROWS_DOWN}
        for mouth in ({}, grin):
            fit = rt.fit(_points(data, person, {**brows, **mouth}, rotation_deg), iterations=30)
            # The driver's brows moved by `level` of the model's own brow components: the avatar
            # is driven at that level, raised or lowered, never both, and his lower brows at rest
            # are the avatar's rest brows.
            assert fit.expr[up] == pytest.approx([max(level, 0.0)] * 3, abs=0.1), (level, mouth)
            assert fit.expr[down] == pytest.approx([max(-level, 0.0)] * 2, abs=0.1), (level, mouth)


def test_measure_brow_limits_finds_where_the_renders_stop_reading_higher():
    """measure_brow_limits on made-up readings: raised brows read higher up to 1.5 and lower past
    it, lowered ones lower all the way; levels without a face are left out."""
    from savatar.core.drive.calibration import measure_brow_limits

    def read(level):
        if level == -2.5:
            return None
        return 0.37 + (0.06 * level - 0.09 * max(level - 1.5, 0.0) if level > 0 else 0.03 * level)

    assert measure_brow_limits(read) == (2.0, 1.5)
    with pytest.raises(ValueError):
        measure_brow_limits(lambda level: None)
    with pytest.raises(ValueError):
        measure_brow_limits(lambda level: 0.37)


def test_a_raise_past_the_brow_limit_drives_the_limit(data):
    """A driver raising his brows further than the avatar's renders can show is driven at the
    raised limit (calibration.brow_limits), not past it where the renders read lower brows; an
    ordinary raise is unaffected."""
    person = _heavy_browed_person(data)
    cal = default_calibration(data)
    lowered, raised = cal.brow_limits
    assert 0 < raised < min(cal.max_drive[data.expr_names.index(n)] for n in BROWS_UP)
    rt = Retargeter(data, K, calibration=cal, seen=False)
    rt.set_neutral([_points(data, person, {}, (0.0, 0.0, 0.0))])
    up = [data.expr_names.index(n) for n in BROWS_UP]
    for level, expected in ((0.8, 0.8), (raised + 1.0, raised)):
        fit = rt.fit(_points(data, person, {n: level for n in BROWS_UP}, (0.0, 0.0, 0.0)), iterations=30)
        assert fit.expr[up] == pytest.approx([expected] * 3, abs=0.1), level


def test_jaw_opens_the_avatars_lips_as_far_as_the_drivers(data):
    """The jaw read apart from the fit. The driver is the seen basis' face (what MediaPipe sees
    on the avatar's renders, with a face of his own): his lips part by known jaw openings, alone
    and under a grin with lowered brows, and the avatar's jaw is the one at which its renders
    show his mouth opening (its measured response, calibration.AVATAR_OPENING), however the
    rest of the face moves; lips parted by the lip components alone open it for the share of
    their opening the renders do not show on an open jaw."""
    seen = seen_offset(data)
    assert seen is not None
    person = _heavy_browed_person(data, seen)
    cal = default_calibration(data, seen=True)
    rt = Retargeter(data, K, calibration=cal)
    turn = (0.0, 10.0, 0.0)
    rest = _points(data, person, {}, turn)
    rt.set_neutral([rest])
    grin = {"mouthSmile_L": 1.2, "mouthSmile_R": 1.2, "browDown_L": 0.5, "browDown_R": 0.5}
    jaws = []
    for jaw in (0.0, 0.05, 0.1, 0.2):
        pts = _points(data, person, {}, turn, jaw)
        shown = float(np.interp(mouth_opening(pts) - mouth_opening(rest), AVATAR_OPENING[1], AVATAR_OPENING[0]))
        for face in ({}, grin):
            fit = rt.fit(_points(data, person, face, turn, jaw), iterations=30)
            assert fit.pose[6] == pytest.approx(shown, abs=0.015), (jaw, face)
        jaws.append(fit.pose[6])
    assert jaws[0] < 0.01 and np.all(np.diff(jaws) > 0.01)
    # Lips parted by the lip components alone: the avatar's renders show only LIP_SHARE of
    # their opening on top of an open jaw, so the jaw opens for the rest, and no further.
    parted = {"mouthUpperUp_L": 1.0, "mouthUpperUp_R": 1.0, "mouthLowerDown_L": 1.0, "mouthLowerDown_R": 1.0}
    pts = _points(data, person, parted, turn)
    opening = mouth_opening(pts) - mouth_opening(rest)
    fit = rt.fit(pts, iterations=30)
    rest_of_it = float(np.interp((1.0 - LIP_SHARE) * opening, AVATAR_OPENING[1], AVATAR_OPENING[0]))
    all_of_it = float(np.interp(opening, AVATAR_OPENING[1], AVATAR_OPENING[0]))
    assert rest_of_it - 0.02 < fit.pose[6] < all_of_it - 0.02, (fit.pose[6], rest_of_it, all_of_it)



def test_a_blink_does_not_move_the_avatars_brows(data):
    """The brows read with the avatar's lids open. The seen basis' blink carries MediaPipe's brow
    and eye-corner landmarks along (brow height +0.03 of the eye distance at blink 1), but the
    lid drive's renders read the same brow height shut as open (measured on the default avatar:
    within 0.008 from lid drive 0 to 1, with the brows at rest or lowered). Read with the fitted
    blink, every real blink lowered the avatar's brows (grin_gaze: browDown 1 in its blink).
    A driver whose lids alone move (brows and eye corners where they were): the avatar's brows
    stay where his are, at rest or lowered."""
    person = _heavy_browed_person(data)
    rt = Retargeter(data, K, calibration=default_calibration(data, seen=True))
    turn = (0.0, 5.0, 0.0)
    rt.set_neutral([_points(data, person, {}, turn)])
    names = list(data.expr_names)
    up, down = [names.index(n) for n in BROWS_UP], [names.index(n) for n in BROWS_DOWN]
    still = [i for part in BROWS + BROW_EYES for i in part]
    for brows in ({}, {"browDown_L": 0.6, "browDown_R": 0.6}):
        open_eyes = _points(data, person, brows, turn)
        want = rt.fit(open_eyes, iterations=30).expr
        for blink in (0.5, 0.9):
            pts = _points(data, person, {**brows, "eyeBlink_L": blink, "eyeBlink_R": blink}, turn)
            pts[still] = open_eyes[still]
            got = rt.fit(pts, iterations=30).expr
            # Measured at most 0.10 apart (lowered brows, lids 0.9 shut); read with the fitted
            # blink, the brows fell by the whole of browDown 1.
            np.testing.assert_allclose(got[up + down], want[up + down], atol=0.12, err_msg=f"{brows} {blink}")
        assert (want[down] > 0.3).all() if brows else (want[up + down] < 0.1).all()


def test_the_fit_carries_on_with_the_jaw_the_drive_opens(data):
    """Where the jaw drive opens the jaw past the fit's, the fit carries on with its jaw held
    there, so the expression it reads pays for what that opening does to the mouth's corners;
    its bounds are left as they were."""
    seen = seen_offset(data)
    person = _heavy_browed_person(data, seen)
    rt = Retargeter(data, K, calibration=default_calibration(data, seen=True))
    rt.set_neutral([_points(data, person, {}, (0.0, 5.0, 0.0))])
    # Lips parted by the lip components, which the fit reads with its jaw shut; the jaw drive
    # opens the jaw for the share of their opening an open jaw's renders do not show.
    parted = {"mouthUpperUp_L": 1.0, "mouthUpperUp_R": 1.0, "mouthLowerDown_L": 1.0, "mouthLowerDown_R": 1.0}
    pts = _points(data, person, parted, (0.0, 5.0, 0.0))
    low, high = rt.fitter.lower.copy(), rt.fitter.upper.copy()
    held = rt._fit_with_jaw(pts, 0.2)
    assert held.pose[6] == pytest.approx(0.2)
    np.testing.assert_array_equal(rt.fitter.lower, low)
    np.testing.assert_array_equal(rt.fitter.upper, high)
    calls = []
    carry_on = rt._fit_with_jaw
    rt._fit_with_jaw = lambda p, jaw: calls.append(jaw) or carry_on(p, jaw)
    rt.reset()
    fit = rt.fit(pts, iterations=30)
    assert len(calls) == 1 and calls[0] > 0.03 and fit.pose[6] > 0.03

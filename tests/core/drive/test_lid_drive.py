"""The avatar's eyelids driven by how far the driver's eyes are open (retarget's lid drive): the
render response curve (LidCurve, measure_lid_curve) and its use by the Retargeter, on synthetic
ground truth: a person whose eyes are larger than the head model's blinks by known amounts."""
from __future__ import annotations

import numpy as np
import pytest

from savatar.core.drive.calibration import LIDS, LidCurve, default_calibration, lid_gaps, measure_lid_curve, symmetric
from savatar.core.drive.retarget import Retargeter
from savatar.core.drive.tracking import FaceFitter, LandmarkModel, intrinsics_for, rodrigues
from savatar.core.head.open_head import load_open_head_data

K = intrinsics_for(640, 480)
# A made-up render response: ratio 1.1 at eyeWide rest + 0.5, closing linearly to 0.4 at blink 1
# (unlike the head model's own lids, so a drive that copied the fitted blink would be caught).
CURVE = LidCurve(np.array([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0]), np.array([1.1, 1.0, 0.85, 0.7, 0.55, 0.4]))


@pytest.fixture(scope="module")
def data():
    return load_open_head_data()


def test_lid_curve_level_inverts_the_response():
    for s in (-0.4, 0.0, 0.1, 0.5, 0.9):
        ratio = float(np.interp(s, CURVE.levels, CURVE.ratio))
        assert CURVE.level(ratio) == pytest.approx(s, abs=1e-9)
    assert CURVE.level(0.05) == pytest.approx(1.0)  # closed past what renders read: the end
    assert CURVE.level(1.5) == pytest.approx(-0.5)
    # Past the smallest reading renders read the lids as opening again (MediaPipe losing them):
    # those levels are never chosen.
    lost = LidCurve(np.array([0.0, 0.5, 0.8, 1.0]), np.array([1.0, 0.5, 0.3, 0.6]))
    assert lost.level(0.1) == pytest.approx(0.8)
    assert lost.level(0.5) == pytest.approx(0.5)
    # eyeWide past where renders read the lids any wider: not used, so jitter above the rest
    # reading does not swing the eyes wide open.
    flat = LidCurve(np.array([-0.5, 0.0, 0.5]), np.array([1.002, 1.0, 0.5]))
    assert flat.level(1.05) == 0.0 and flat.level(0.75) == pytest.approx(0.25)


def test_measure_lid_curve_reads_the_gap_over_the_rest_gap():
    def render(blink, wide):
        if blink > 0.95:
            return None  # no face found: left out
        gap = 10.0 * (1.0 - 0.6 * blink) + 2.0 * (wide - 1.0)
        pts = np.zeros((478, 2))
        for up, low in LIDS:
            pts[up] = (50.0, 100.0)
            pts[low] = (50.0, 100.0 + gap)
        return pts

    curve = measure_lid_curve(render, rest_wide=1.0, levels=(-0.5, 0.0, 0.5, 0.9, 1.0))
    assert list(curve.levels) == [-0.5, 0.0, 0.5, 0.9]
    np.testing.assert_allclose(curve.ratio, [1.1, 1.0, 0.7, 0.46], atol=1e-9)


def test_lid_gaps_need_the_lid_landmarks():
    pts = np.arange(478 * 2, dtype=float).reshape(478, 2)
    assert lid_gaps(pts) is not None and lid_gaps(pts[:100]) is None
    assert lid_gaps(pts[:100], index=np.arange(100)) is None


def test_one_sided_response_goes_to_both_sides():
    got = symmetric({"cheekSquint_R": (1.2, 2.5), "mouthPucker": (3.0, 2.0)})
    assert got == {"cheekSquint_R": (1.2, 2.5), "cheekSquint_L": (1.2, 2.5), "mouthPucker": (3.0, 2.0)}


def _big_eyed_person(data) -> LandmarkModel:
    """A driver whose lids sit 1.5 mm further apart than the head model's (and whose face
    differs a little everywhere): a constant difference that must not reach the avatar."""
    offset = np.random.default_rng(3).normal(scale=0.0005, size=(478, 3))
    for up, low in LIDS:
        offset[up, 1] += 0.00075
        offset[low, 1] -= 0.00075
    return LandmarkModel(data, landmark_offset=offset)


def _points(data, person: LandmarkModel, blink: float, rotation: np.ndarray, gaze=(0.0, 0.0)) -> np.ndarray:
    e = np.zeros(len(data.expr_names))
    for side in ("L", "R"):
        e[data.expr_names.index(f"eyeBlink_{side}")] = blink
    xw = person.evaluate(rodrigues(rotation), np.array([0.0, 0.0, -0.45]), np.zeros(3), np.array(gaze), e)
    return FaceFitter(data, K)._project(xw)[0]


def _lid_retargeter(data, rotation: np.ndarray):
    """(person, calibration, retargeter, rest points): the big-eyed person's retargeter with the
    made-up lid curve, his neutral measured on his rest face at head rotation (3,)."""
    person = _big_eyed_person(data)
    cal = default_calibration(data)
    cal.lids = CURVE
    rt = Retargeter(data, K, calibration=cal, seen=False)
    rest = _points(data, person, 0.0, rotation)
    rt.set_neutral([rest])
    return person, cal, rt, rest


@pytest.mark.parametrize("rotation_deg", [(0.0, 0.0, 0.0), (8.0, 20.0, -10.0)])
def test_retargeter_closes_the_avatars_eyes_by_the_fraction_the_driver_closes_his(data, rotation_deg):
    rotation = np.radians(rotation_deg)
    person, cal, rt, rest = _lid_retargeter(data, rotation)
    names = data.expr_names
    blinks = [names.index("eyeBlink_L"), names.index("eyeBlink_R")]
    wides = [names.index("eyeWide_L"), names.index("eyeWide_R")]
    squints = [names.index("eyeSquint_L"), names.index("eyeSquint_R")]
    rest_gap = lid_gaps(rest).mean()
    for b in (0.0, 0.3, 0.5, 0.7):
        pts = _points(data, person, b, rotation)
        fit = rt.fit(pts, iterations=30)
        # The person's eyes are this fraction as open as at rest (measured on the image, apart
        # from the retargeter); the avatar is driven to the level whose renders read the same.
        fraction = lid_gaps(pts).mean() / rest_gap
        want = (1.0 - fraction) / 0.6  # CURVE is linear between levels 0 and 1
        assert fit.expr[blinks] == pytest.approx([want, want], abs=0.04), b
        np.testing.assert_allclose(fit.expr[wides], cal.rest[wides], atol=1e-9)
        assert np.all(fit.expr[squints] == 0.0)
        if b == 0.0:  # his larger eyes at rest are the avatar's rest eyes
            assert want == pytest.approx(0.0, abs=1e-6)


def test_lowered_brows_do_not_close_the_avatars_eyes_past_the_drivers(data):
    """A driver frowning with his eyes half shut: the avatar's brows come down, and the lids
    close as far as the driver's lid gap says, not that plus what the lowered brows close (on
    renders the brow then slid over the closed eye, where MediaPipe found the eye, tilted)."""
    person, cal, rt, rest = _lid_retargeter(data, np.zeros(3))
    names = data.expr_names
    e = np.zeros(len(names))
    for side in ("L", "R"):
        e[names.index(f"eyeBlink_{side}")] = 0.6
        e[names.index(f"browDown_{side}")] = 0.8
    pts = FaceFitter(data, K)._project(person.evaluate(np.eye(3), np.array([0.0, 0.0, -0.45]), np.zeros(3),
                                                       np.zeros(2), e))[0]
    fit = rt.fit(pts, iterations=30)
    brows = [names.index("browDown_L"), names.index("browDown_R")]
    assert np.all(fit.expr[brows] > 0.3)  # the frown shows
    level = CURVE.level(float(np.mean(lid_gaps(pts) / lid_gaps(rest))))
    for (blink, wide, _), c in zip(rt._eyes, cal.closing):
        lid_only = c[blink] * level + c[wide] * cal.rest[wide]
        closers = np.where(c > 0, c, 0.0)
        assert closers @ fit.expr + np.minimum(c[wide], 0) * fit.expr[wide] == pytest.approx(lid_only, rel=0.02)
        assert fit.expr[blink] < level - 0.1  # the brows' share came off the blink


def test_a_closed_eyes_irises_do_not_turn_the_avatars_eyes(data):
    """A closing lid hides the iris and MediaPipe drags its landmarks down with the lid: in a
    blink the gaze holds the last one read with open eyes, and follows the irises again once
    the eyes are open."""
    person, cal, rt, rest = _lid_retargeter(data, np.zeros(3))
    look = rt.fit(_points(data, person, 0.0, np.zeros(3), gaze=(0.0, 0.3)), iterations=30).pose[9:15]
    assert look[1] > 0.15 and look[4] > 0.15  # (the fit's gaze prior holds it short of 0.3)
    shut = _points(data, person, 1.0, np.zeros(3), gaze=(0.5, -0.2))  # irises dragged down and aside
    assert lid_gaps(shut).mean() / lid_gaps(rest).mean() < 0.35
    fit = rt.fit(shut, iterations=30)
    np.testing.assert_allclose(fit.pose[9:15], look, atol=1e-9)
    back = rt.fit(_points(data, person, 0.0, np.zeros(3), gaze=(0.0, -0.3)), iterations=30).pose[9:15]
    assert back[1] < -0.15 and back[4] < -0.15

"""Face tracking: the compact landmark model, the fit on synthetic landmarks, and tracking a real
face (scikit-image's astronaut) moved by known in-plane rotations, scales and shifts."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from savatar.core.drive.tracking import (FaceFitter, FaceTracker, LandmarkModel, OneEuroFilter, TrackerParams,
                                         intrinsics_for, rodrigues, rotation_vector, track_video)
from savatar.core.head.head_model import HeadModel
from savatar.core.head.open_head import load_open_head_data
from scripted_landmarker import ScriptedLandmarker

K = intrinsics_for(640, 480, 50.0)


@pytest.fixture(scope="module")
def data():
    return load_open_head_data()


@pytest.fixture(scope="module")
def lmodel(data):
    return LandmarkModel(data)


def pose_vector(root, jaw, eyes) -> np.ndarray:
    pose = np.zeros(15)
    pose[0:3], pose[6:9] = root, jaw
    pose[9:15] = [eyes[0], eyes[1], 0.0, eyes[0], eyes[1], 0.0]
    return pose


def synthetic_points(data, lmodel, root, t, jaw, eyes, expr, noise_px=0.0, seed=0) -> np.ndarray:
    fitter = FaceFitter(data, K)
    xw = lmodel.evaluate(rodrigues(np.asarray(root, float)), np.asarray(t, float), np.asarray(jaw, float),
                         np.asarray(eyes, float), expr)
    uv, _ = fitter._project(xw)
    return uv + np.random.default_rng(seed).normal(scale=noise_px, size=uv.shape)


def test_compact_model_matches_head_model(data, lmodel):
    model = HeadModel(data)
    rng = np.random.default_rng(1)
    for _ in range(3):
        expr = rng.uniform(0, 1, lmodel.num_expr)
        root, t = rng.normal(scale=0.3, size=3), rng.normal(scale=0.1, size=3)
        jaw, eyes = np.array([rng.uniform(0, 0.4), 0.05, -0.03]), rng.normal(scale=0.2, size=2)
        with torch.no_grad():
            ref = model(expr=torch.tensor(expr[None], dtype=torch.float32),
                        pose=torch.tensor(pose_vector(root, jaw, eyes)[None], dtype=torch.float32),
                        translation=torch.tensor(t[None], dtype=torch.float32)).landmarks[0].numpy()
        x = lmodel.evaluate(rodrigues(root), t, jaw, eyes, expr)
        assert np.abs(x - ref).max() < 1e-5


@pytest.mark.parametrize("seen", [False, True])
def test_pixel_jacobian_matches_finite_differences(data, seen):
    # seen: with a per-landmark change of each expression's motion and of the jaw's (the seen basis)
    rng = np.random.default_rng(2)
    n, e = len(data.lmk_faces), data.exprdirs.shape[2]
    offsets = (rng.normal(scale=1e-3, size=(n, 3, e)), rng.normal(scale=0.01, size=(n, 3))) if seen else (None, None)
    fitter = FaceFitter(data, K, expr_offset=offsets[0], jaw_offset=offsets[1])
    lmodel = fitter.model
    root, t, e = rng.normal(scale=0.3, size=3), np.array([0.0, 0.0, -0.5]), rng.uniform(0, 0.5, lmodel.num_expr)
    jaw, eyes = np.array([0.2, 0.0, 0.0]), np.array([0.1, -0.1])
    _, p = fitter._project(lmodel.evaluate(rodrigues(root), t, jaw, eyes, e), derivative=True)
    jac = lmodel.jacobian(p)

    def f(d):
        x = lmodel.evaluate(rodrigues(d[:3]) @ rodrigues(root), t + d[3:6], jaw + d[6:9], eyes + d[9:11], e + d[11:])
        return fitter._project(x)[0].T.reshape(-1)
    h = 1e-6
    for i in range(jac.shape[1]):
        d = np.zeros(jac.shape[1])
        d[i] = h
        num = (f(d) - f(-d)) / (2 * h)
        # Jaw and eye columns use the right-perturbation derivative, exact only at small rotations;
        # the expression columns are float32.
        tol = 0.15 if 6 <= i < 11 else 1e-4  # the gap grows as angle / 2 (0.1 here)
        assert np.abs(num - jac[:, i]).max() < tol * max(1.0, np.abs(num).max()), i


def test_synthetic_fit_recovers_parameters(data, lmodel):
    names = data.expr_names
    expr = np.zeros(lmodel.num_expr)
    truth = {"eyeBlink_L": 0.7, "mouthSmile_L": 0.5, "mouthSmile_R": 0.4, "mouthPucker": 0.3}
    for n, v in truth.items():
        expr[names.index(n)] = v
    root, t, jaw, eyes = np.array([0.15, 0.35, -0.1]), np.array([0.02, -0.03, -0.55]), [0.25, 0, 0], [0.05, -0.1]
    pts = synthetic_points(data, lmodel, root, t, jaw, eyes, expr, noise_px=0.5)
    fitter = FaceFitter(data, K)
    for _ in range(3):  # the first call initialises from solvePnP, the next ones warm-start
        fit = fitter.fit(pts)
    rel = rotation_vector(rodrigues(fit.pose[:3]) @ rodrigues(root).T)
    assert math.degrees(np.linalg.norm(rel)) < 1.0
    assert np.abs(fit.translation - t).max() < 0.005
    assert abs(math.degrees(fit.pose[6] - jaw[0])) < 2.0
    for n, v in truth.items():
        assert abs(fit.expr[names.index(n)] - v) < 0.1, n
    assert fit.expr.min() >= 0 and fit.expr.max() <= 1
    assert fit.residual_px < 1.0 and fit.status == "ok"


def test_one_euro_filter_smooths_noise_and_passes_constants():
    rng = np.random.default_rng(3)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    out = np.array([f(np.array([1.0, -2.0]) + rng.normal(scale=0.1, size=2), i / 30) for i in range(120)])
    assert np.abs(out[60:].mean(0) - [1.0, -2.0]).max() < 0.03
    assert out[60:].std(0).max() < 0.05  # raw noise has std 0.1



def test_no_face_holds_then_eases_to_neutral(data, lmodel):
    expr = np.zeros(lmodel.num_expr)
    expr[data.expr_names.index("mouthSmile_L")] = 0.6
    pts = synthetic_points(data, lmodel, [0, 0.2, 0], [0, 0, -0.5], [0.2, 0, 0], [0, 0], expr)
    params = TrackerParams(hold_s=0.5, ease_s=1.0, filter=False)
    tracker = FaceTracker(data, params, K=K, landmarker=ScriptedLandmarker([pts, None, None, None, pts]))
    image = np.zeros((480, 640, 3), np.uint8)
    first = tracker.process(image, 0.0)
    assert first.status == "ok"
    held = tracker.process(image, 0.3)
    assert held.status == "no face (holding)" and np.allclose(held.expr, first.expr)
    easing = tracker.process(image, 1.0)  # halfway through the ease
    assert easing.status == "no face"
    assert 0 < easing.expr.max() < first.expr.max()
    gone = tracker.process(image, 2.0)
    assert gone.status == "no face" and np.abs(gone.expr).max() == 0 and np.abs(gone.pose).max() == 0
    assert tracker.process(image, 2.1).status == "ok"


def astronaut_frame(roll_deg: float, scale: float, dx: float, dy: float) -> np.ndarray:
    """640x480 RGB: the astronaut's face (about (210, 150) in the 512x512 image) rotated
    counter-clockwise by roll_deg, scaled, and moved (dx, dy) pixels from the frame centre."""
    from skimage.data import astronaut

    m = cv2.getRotationMatrix2D((210.0, 150.0), roll_deg, scale)
    m[:, 2] += [320 - 210 + dx, 240 - 150 + dy]
    return cv2.warpAffine(astronaut(), m, (640, 480))


def test_tracks_a_real_face_rolled_scaled_and_moved(data):
    # 2.5 degrees, up to 4 % scale and 8 px a frame: a brisk head motion at 30 fps. (Jumps of 5
    # degrees and 10 % at once throw MediaPipe's video-mode tracking off by a few degrees.)
    n = 17
    rolls = np.linspace(-20, 20, n)
    scales = 1.0 + 0.12 * np.sin(np.arange(n) / 3)
    shifts = np.stack([np.linspace(-40, 40, n), 25 * np.cos(np.arange(n) / 3)], 1)
    # The filter's lag would blur the per-frame comparison, so it is off here.
    tracker = FaceTracker(data, TrackerParams(filter=False))
    results = []
    for i, (roll, s, (dx, dy)) in enumerate(zip(rolls, scales, shifts)):
        results.append(tracker.process(astronaut_frame(roll, s, dx, dy), i / 30))
        if i == 8:
            blank = tracker.process(np.zeros((480, 640, 3), np.uint8), (i + 0.5) / 30)
            assert "no face" in blank.status
    tracker.close()
    assert all(r.status == "ok" for r in results)
    r_first = rodrigues(results[0].pose[:3])
    for i, r in enumerate(results):
        # An image rotated counter-clockwise is the head turning about world +z (towards the camera).
        rel = rotation_vector(rodrigues(r.pose[:3]) @ r_first.T)
        assert abs(math.degrees(rel[2]) - (rolls[i] - rolls[0])) < 3.0, i
        if i:
            move = r.translation - results[0].translation
            sx, sy = shifts[i] - shifts[0]
            # Image right is world +x; image down is world -y.
            assert np.sign(move[0]) == np.sign(sx), i
            if abs(sy) > 2:
                assert np.sign(move[1]) == -np.sign(sy), i


def test_track_video_writes_a_motion(data, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    for i in range(4):
        writer.write(cv2.cvtColor(astronaut_frame(5.0 * i, 1.0, 10.0 * i, 0.0), cv2.COLOR_RGB2BGR))
    writer.release()
    seen = []
    motion = track_video(path, data, progress=lambda done, total: seen.append(done))
    assert len(motion) == 4 and motion.fps == pytest.approx(25.0)
    assert seen[-1] == 4
    assert motion.expr.shape == (4, len(data.expr_names)) and motion.expr_names == data.expr_names
    assert np.allclose(motion.translation[0], 0) and motion.translation[-1, 0] > 0
    # The One-Euro filter lags 5-degree jumps at 25 fps, so only the direction of the roll is checked.
    assert math.degrees(motion.pose[-1, 2] - motion.pose[0, 2]) > 5.0


def test_the_fits_float32_bases_hold_no_subnormals():
    """Subnormal floats run through the CPU's slow path: the seen basis' near-zero entries cast
    to float32 made the fit's normal equations 15 times slower. The bases keep every entry
    float32 holds normally and drop only what it cannot."""
    from savatar.core.drive.calibration import seen_offset
    from savatar.core.drive.tracking import _float32

    data = load_open_head_data()
    seen = seen_offset(data)
    model = LandmarkModel(data, expr_offset=None if seen is None else seen[0],
                          jaw_offset=None if seen is None else seen[1])
    tiny = np.finfo(np.float32).tiny
    for basis in (model.cb3, model.jrb32, *model.ab3):
        assert basis.dtype == np.float32 and not np.any((basis != 0) & (np.abs(basis) < tiny))
    np.testing.assert_array_equal(_float32(np.array([1e-40, -3e-42, 2e-38, -0.5])), np.float32([0, 0, 2e-38, -0.5]))

"""Face signals and the real frame's head mask, on a real portrait's MediaPipe landmarks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from savatar.core.reenact.face_signals import (LOWER_LIP, SIGNALS, amplitude, correlation, face_signals,
                                               inter_ocular, landmark_distance)
from savatar.core.reenact.head_mask import CHIN, CHIN_MARGIN, FOREHEAD, head_mask


@pytest.fixture(scope="module")
def landmarks() -> np.ndarray:
    """(478, 3) MediaPipe landmarks of scikit-image's astronaut portrait (a real face)."""
    import skimage.data

    from savatar.core.drive.face_landmarks import FaceLandmarker

    with FaceLandmarker() as landmarker:
        lm = landmarker(skimage.data.astronaut())
    assert lm is not None
    return lm


def rotated(lm: np.ndarray, degrees: float, centre: np.ndarray) -> np.ndarray:
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    out = lm.copy()
    out[:, :2] = (lm[:, :2] - centre) @ r.T + centre
    return out


def test_signals_do_not_depend_on_size_or_place(landmarks):
    base = face_signals(landmarks)
    assert set(base) == set(SIGNALS)
    moved = landmarks.copy()
    moved[:, :2] = 2.5 * landmarks[:, :2] + [40.0, -17.0]
    for k, v in face_signals(moved).items():
        assert v == pytest.approx(base[k], abs=1e-9), k
    # A near-frontal, level face with closed lips.
    assert abs(base["head_yaw"]) < 0.2 and abs(base["head_roll"]) < 8
    assert base["mouth_open"] < 0.3 and 0.1 < base["eye_open"] < 0.5 < base["mouth_width"]


def test_signals_follow_what_moves(landmarks):
    base = face_signals(landmarks)
    iod = inter_ocular(landmarks)
    tilted = face_signals(rotated(landmarks, 12.0, landmarks[:, :2].mean(0)))
    assert tilted["head_roll"] == pytest.approx(base["head_roll"] + 12.0, abs=1e-6)
    for k in ("mouth_open", "mouth_width", "eye_open", "brow_height"):
        assert tilted[k] == pytest.approx(base[k], rel=1e-6), k
    opened = landmarks.copy()
    opened[LOWER_LIP, 1] += 0.3 * iod
    assert face_signals(opened)["mouth_open"] == pytest.approx(base["mouth_open"] + 0.3, abs=0.05)
    turned = landmarks.copy()
    turned[1, 0] += 0.2 * iod  # the nose tip towards the subject's left cheek
    assert face_signals(turned)["head_yaw"] > base["head_yaw"] + 0.1


def test_landmark_distance_and_correlation(landmarks):
    iod = inter_ocular(landmarks)
    assert landmark_distance(landmarks, landmarks) == 0.0
    shifted = landmarks.copy()
    shifted[:, 0] += 0.1 * iod
    assert landmark_distance(landmarks, shifted) == pytest.approx(0.1)
    t = np.linspace(0, 6, 50)
    assert correlation(np.sin(t), 3 * np.sin(t) + 1) == pytest.approx(1.0)
    assert correlation(np.sin(t), -np.sin(t)) == pytest.approx(-1.0)
    assert math.isnan(correlation(np.ones(50), np.sin(t)))  # a signal that never moves says nothing


def test_amplitude_says_how_much_of_the_motion_the_render_shows():
    """A render that follows at a third of the size correlates perfectly: only the amplitude says so."""
    t = np.linspace(0, 6, 50)
    real = 0.6 + 0.1 * np.sin(t)
    faint = 0.5 + 0.1 / 3 * np.sin(t) + 0.002 * np.cos(7 * t)
    assert correlation(real, faint) > 0.99
    assert amplitude(real, faint) == pytest.approx(1 / 3, abs=0.01)
    assert amplitude(real, 2 * real) == pytest.approx(2.0)
    assert amplitude(real, 1 - real) == pytest.approx(-1.0)
    assert math.isnan(amplitude(np.ones(50), np.sin(t)))


def test_head_mask_keeps_the_head_and_cuts_below_the_chin(landmarks):
    h, w = 512, 512
    person = np.ones((h, w), np.float32)
    mask = head_mask(person, landmarks)
    chin, top = landmarks[CHIN, :2], landmarks[FOREHEAD, :2]
    length = np.linalg.norm(chin - top)
    down = (chin - top) / length
    # Straight below the chin, the mask ends CHIN_MARGIN face lengths down the face's axis.
    column = int(chin[0])
    cut = chin[1] + (CHIN_MARGIN * length - (column + 0.5 - chin[0]) * down[0]) / down[1]
    assert mask[0, column] and abs(np.flatnonzero(mask[:, column]).max() + 0.5 - cut) < 1.0
    assert not head_mask(np.zeros((h, w), np.float32), landmarks).any()  # no person, no head
    # A tilted head is cut across its own neck: the line turns with the face.
    tilted = rotated(landmarks, 20.0, chin)
    m2 = head_mask(person, tilted)
    cols = np.flatnonzero(m2.any(0))
    bottom = [np.flatnonzero(m2[:, c]).max() for c in (cols[0] + 50, cols[-1] - 50)]
    assert abs(bottom[0] - bottom[1]) > 50

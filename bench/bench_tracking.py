"""Face-tracking benchmarks on a 640x480 frame of scikit-image's astronaut: MediaPipe landmarks,
the warm-started fit, and landmarks + fit + filter end to end (capture excluded)."""
from __future__ import annotations

import time

import numpy as np

from bench import entry, time_ms


@entry("tracking")
def tracking() -> dict[str, float]:
    import cv2
    from skimage.data import astronaut

    from savatar.core.drive.face_landmarks import FaceLandmarker
    from savatar.core.drive.tracking import FaceFitter, FaceTracker, TrackerParams, intrinsics_for
    from savatar.core.head.open_head import load_open_head_data

    m = np.float32([[1, 0, 320 - 210], [0, 1, 240 - 150]])  # face centred in the frame
    frame = cv2.warpAffine(astronaut(), m, (640, 480))
    data = load_open_head_data()
    params = TrackerParams()
    with FaceLandmarker(static_images=False) as lm:
        landmarks_ms = time_ms(lambda: lm(frame), repeat=20)
        pts = lm(frame)
    fitter = FaceFitter(data, intrinsics_for(640, 480, params.fov_y_deg), params=params)
    t0 = time.perf_counter()
    fitter.fit(pts)
    first_fit_ms = (time.perf_counter() - t0) * 1e3
    # Warm starts on jittered landmarks, as from consecutive frames of a still face.
    rng = np.random.default_rng(0)
    jittered = [pts[:, :2] + rng.normal(scale=0.7, size=(len(pts), 2)) for _ in range(8)]
    k = iter(range(10 ** 9))
    fit_ms = time_ms(lambda: fitter.fit(jittered[next(k) % 8]), repeat=40)
    tracker = FaceTracker(data, params)
    clock = iter(range(10 ** 9))
    end_ms = time_ms(lambda: tracker.process(frame, next(clock) / 30), repeat=20)
    tracker.close()
    return {"landmarks_ms": landmarks_ms, "fit_first_ms": first_fit_ms, "fit_ms": fit_ms, "end_to_end_ms": end_ms}

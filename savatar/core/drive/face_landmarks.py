"""MediaPipe Face Mesh (478 landmarks, models shipped in the mediapipe 0.10.14 wheel)."""
from __future__ import annotations

import numpy as np

from savatar.core.io.pixels import to_uint8


class FaceLandmarker:
    """Detects the largest face's 478 landmarks.

    __call__(image (H, W, 3) RGB uint8 or float in [0, 1]) -> (478, 3) array in pixels
    (x right, y down, z relative depth in pixel units), or None when no face is found.
    face_count is the number of faces the last call found (at most max_faces).
    """

    def __init__(self, static_images: bool = True, max_faces: int = 1, min_confidence: float = 0.5):
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=static_images, max_num_faces=max_faces,
                                                     refine_landmarks=True, min_detection_confidence=min_confidence)
        self.face_count = 0

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        if image.dtype != np.uint8:
            image = to_uint8(image)
        result = self._mesh.process(np.ascontiguousarray(image[..., :3]))
        self.face_count = len(result.multi_face_landmarks or ())
        if not self.face_count:
            return None
        h, w = image.shape[:2]
        faces = [np.array([[p.x * w, p.y * h, p.z * w] for p in f.landmark]) for f in result.multi_face_landmarks]
        return max(faces, key=lambda f: np.ptp(f[:, 0]) * np.ptp(f[:, 1]))

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

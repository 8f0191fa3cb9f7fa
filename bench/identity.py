"""An outside judge of identity for benchmarks: dlib's face-recognition ResNet (128-D face
descriptors; two faces are the same person below a distance of 0.6).

Optional (`pip install .[judge]`: dlib-bin and face-recognition-models), never a run-time
dependency. face_recognition_models' __init__ imports pkg_resources, so its model files are
found through the import system without importing it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SAME_PERSON = 0.6


def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    return Path(spec.origin).parent / "models" if spec and spec.origin else None


def available() -> bool:
    return importlib.util.find_spec("dlib") is not None and _models_dir() is not None


class IdentityJudge:
    """descriptor(rgb uint8 (H, W, 3)) -> (128,) of the largest face, or None without a face.

    Faces are found by dlib's HOG detector, and where it finds none by dlib's CNN detector (the
    same package's, slower): the HOG detector gives up on most faces turned 60 degrees, real or
    rendered, and a mean over the few it finds moved with which ones those were."""

    def __init__(self):
        import dlib

        models = _models_dir()
        self._detect = dlib.get_frontal_face_detector()
        self._detect_cnn = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(self, rgb: np.ndarray) -> np.ndarray | None:
        image = np.ascontiguousarray(rgb[..., :3])
        faces = list(self._detect(image, 1)) or [d.rect for d in self._detect_cnn(image, 0)]
        if not faces:
            return None
        face = max(faces, key=lambda r: r.width() * r.height())
        return np.asarray(self._net.compute_face_descriptor(image, self._shape(image, face)), np.float64)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Descriptor distance of the faces in two images; NaN when either has none."""
        da, db = self.descriptor(a), self.descriptor(b)
        return float("nan") if da is None or db is None else float(np.linalg.norm(da - db))

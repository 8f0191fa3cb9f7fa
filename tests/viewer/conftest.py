"""Shared fixtures for the viewer and drive-source tests."""
from __future__ import annotations

import cv2
import numpy as np
import pytest


@pytest.fixture
def astronaut_video(tmp_path):
    """A short MJPG clip of scikit-image's astronaut portrait, gently rolling: a real face."""
    import skimage.data

    path = tmp_path / "face.avi"
    img = skimage.data.astronaut()[..., ::-1]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (512, 512))
    for i in range(12):
        m = cv2.getRotationMatrix2D((256, 200), 3.0 * np.sin(i / 2), 1.0)
        w.write(cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REPLICATE))
    w.release()
    return path

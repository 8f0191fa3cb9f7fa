"""The face lined up with the portrait beyond what the shape modes can say: per-vertex static
offsets from all MediaPipe landmarks.

The identity fit has a few dozen shape modes; what they cannot express (a nose a little
narrower, a jaw line a little further out, lips a little higher) stays as landmark residuals of a
few pixels. Colours lifted through a mesh that is off by that much land on the wrong surface:
when the avatar is posed, the feature shows twice (the texture's and the geometry's). Here each
landmark's residual, measured in the image plane of every source and brought back to the neutral
head, becomes a displacement of the landmark; the displacements are spread smoothly over the
face's vertices (a normalised Gaussian kernel over the template, with a pull towards zero far
from any landmark) and capped, so the face moves by millimetres and stays smooth.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from savatar.core.drive.tracking import FLIP, mediapipe_indices, project_tracking
from savatar.core.head.head_model import HeadModel, HeadModelData

KERNEL = 0.006  # metres: the spread of one landmark's displacement over the face
SMOOTHING = 0.3  # regulariser of the interpolation: larger follows single landmarks less
MAX_OFFSET = 0.006  # metres: a larger residual is a wrong landmark, not a face


def _landmark_points(verts: np.ndarray, data: HeadModelData) -> np.ndarray:
    """(L, 3) landmark positions on a mesh (V, 3) through the embedding."""
    tri = np.asarray(data.faces, np.int64)[np.asarray(data.lmk_faces, np.int64)]
    return (verts[tri] * np.asarray(data.lmk_bary, np.float64)[:, :, None]).sum(1)


def _rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R (3, 3) best taking the points a (N, 3) onto b (N, 3) (Kabsch): b ~ a @ R.T + t."""
    u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def landmark_offsets(data: HeadModelData, shape: np.ndarray, sources: Sequence) -> np.ndarray:
    """(V, 3) static offset moving the face's landmarks onto every source's observed ones.

    sources: fitted build sources (landmarks (478, 2+) pixels, K, expr, pose, translation)."""
    model = HeadModel(data)
    offsets = np.zeros((len(data.v_template), 3))
    face = np.asarray(data.vertex_regions.get("face", []), np.int64)
    if not len(face) or not len(sources):
        return offsets
    mp = mediapipe_indices(data)
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    with torch.no_grad():
        neutral = model(shape=f(shape)).vertices[0].double().numpy()
    rest = _landmark_points(neutral, data)
    total = np.zeros_like(rest)
    for src in sources:
        with torch.no_grad():
            posed = model(shape=f(shape), expr=f(src.expr), pose=f(src.pose),
                          translation=f(src.translation)).vertices[0].double().numpy()
        points = _landmark_points(posed, data)
        uvz = project_tracking(points, src.K)
        residual = np.asarray(src.landmarks, np.float64)[mp, :2] - uvz[:, :2]
        # The pixel residual at the landmark's depth, in the camera's image plane, then in the world
        # (FLIP maps world to camera and is its own inverse) and on the neutral head.
        in_camera = np.stack([residual[:, 0] * uvz[:, 2] / src.K[0, 0], residual[:, 1] * uvz[:, 2] / src.K[1, 1],
                              np.zeros(len(points))], 1)
        total += (in_camera @ FLIP) @ _rotation(rest, points)
    delta = total / len(sources)
    norm = np.linalg.norm(delta, axis=1, keepdims=True)
    delta *= np.minimum(1.0, MAX_OFFSET / np.maximum(norm, 1e-12))
    template = np.asarray(data.v_template, np.float64)
    anchors = _landmark_points(template, data)
    kernel = lambda a, b: np.exp(-0.5 * ((a[:, None, :] - b[None]) ** 2).sum(-1) / KERNEL ** 2)  # noqa: E731
    # Gaussian radial basis interpolation, regularised: close to each landmark's displacement at
    # the landmark, smooth between them, decaying to zero away from all of them.
    coeff = np.linalg.solve(kernel(anchors, anchors) + SMOOTHING * np.eye(len(anchors)), delta)
    field = kernel(template[face], anchors) @ coeff
    norm = np.linalg.norm(field, axis=1, keepdims=True)
    offsets[face] = field * np.minimum(1.0, MAX_OFFSET / np.maximum(norm, 1e-12))
    return offsets

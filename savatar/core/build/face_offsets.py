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
# MediaPipe's relative depth is a learned guess, smoother than the face: it only pulls part way.
DEPTH_WEIGHT = 0.5
ROUNDS = 3
# Landmarks that say what the face does, not what it is: the inner lip contour (how far the mouth
# is open) and the irises (where the eyes look). Their residuals are expression and gaze the fit
# did not catch; as static offsets they would pull the lips and eyelids apart for good.
EXPRESSION_LANDMARKS = frozenset((78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,
                                  95, 88, 178, 87, 14, 317, 402, 318, 324, *range(468, 478)))


def landmark_points(verts: np.ndarray, data: HeadModelData) -> np.ndarray:
    """(L, 3) landmark positions on a mesh (V, 3) through the embedding."""
    tri = np.asarray(data.faces, np.int64)[np.asarray(data.lmk_faces, np.int64)]
    return (verts[tri] * np.asarray(data.lmk_bary, np.float64)[:, :, None]).sum(1)


def _camera_points(uv: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(L, 3) camera-space points of pixels uv (L, 2) at depths (L,) metres."""
    return np.stack([(uv[:, 0] - K[0, 2]) * depth / K[0, 0], (uv[:, 1] - K[1, 2]) * depth / K[1, 1], depth], 1)


def _depth_residual(observed: np.ndarray, uvz: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(L,) metres along the camera's depth axis that move the mesh's landmarks (projected uvz
    (L, 3), depth in metres) to MediaPipe's 3D landmarks (observed (L, 3), z relative depth in
    pixel units of x). MediaPipe's points are brought to metres at the face's distance and
    aligned to the mesh's by the best similarity first: its depth axis is its own (tilted by
    10-20 degrees from the fitted pose's), so only the shape left after alignment is a residual."""
    if observed.shape[1] < 3:
        return np.zeros(len(uvz))
    distance = uvz[:, 2].mean()
    mp = _camera_points(observed[:, :2], distance + observed[:, 2] * distance / K[0, 0], K)
    mesh = _camera_points(uvz[:, :2], uvz[:, 2], K)
    a, b = mp - mp.mean(0), mesh - mesh.mean(0)
    R = _rotation(a, b)
    scale = np.trace(R @ a.T @ b) / max((a * a).sum(), 1e-12)
    return (scale * a @ R.T - b)[:, 2]


def _rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R (3, 3) best taking the points a (N, 3) onto b (N, 3) (Kabsch): b ~ a @ R.T + t."""
    u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def landmark_offsets(data: HeadModelData, shape: np.ndarray, sources: Sequence, rounds: int = ROUNDS) -> np.ndarray:
    """(V, 3) static offset moving the face's landmarks onto every source's observed ones.

    sources: fitted build sources (landmarks (478, 2+) pixels, K, expr, pose, translation).
    Each round measures the residuals through the mesh with the offsets so far and adds a
    correction: the first-order step from pixels to the neutral head leaves part of the residual
    (the expression's and the jaw's deformation of the displacement, the perspective)."""
    offsets = np.zeros((len(data.v_template), 3))
    face = np.asarray(data.vertex_regions.get("face", []), np.int64)
    if not len(face) or not len(sources):
        return offsets
    model = HeadModel(data)
    mp = mediapipe_indices(data)
    shape_only = np.array([i not in EXPRESSION_LANDMARKS for i in mp])
    template = np.asarray(data.v_template, np.float64)
    anchors = landmark_points(template, data)[shape_only]
    kernel = lambda a, b: np.exp(-0.5 * ((a[:, None, :] - b[None]) ** 2).sum(-1) / KERNEL ** 2)  # noqa: E731
    # Gaussian radial basis interpolation, regularised: close to each landmark's displacement at
    # the landmark, smooth between them, decaying to zero away from all of them. (F, L): from
    # the landmarks' displacements to the face vertices'.
    spread = np.linalg.solve(kernel(anchors, anchors) + SMOOTHING * np.eye(len(anchors)), kernel(template[face], anchors).T).T
    for k in range(rounds):
        # Depth once: the later rounds refine what the image plane shows exactly, the depth is
        # a pull part way towards MediaPipe's guess, not a target to converge on.
        delta = _landmark_residuals(model, data, mp, shape, sources, offsets, DEPTH_WEIGHT if k == 0 else 0.0)[shape_only]
        norm = np.linalg.norm(delta, axis=1, keepdims=True)
        offsets[face] += spread @ (delta * np.minimum(1.0, MAX_OFFSET / np.maximum(norm, 1e-12)))
        norm = np.linalg.norm(offsets, axis=1, keepdims=True)
        offsets *= np.minimum(1.0, MAX_OFFSET / np.maximum(norm, 1e-12))
    return offsets


def _landmark_residuals(model: HeadModel, data: HeadModelData, mp: np.ndarray, shape: np.ndarray, sources: Sequence,
                        offsets: np.ndarray, depth_weight: float) -> np.ndarray:
    """(L, 3) metres on the neutral head (with the static offsets so far) that move each landmark
    onto the observed ones, averaged over the sources; depth_weight of the way in depth."""
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    with torch.no_grad():
        neutral = model(shape=f(shape), static_offset=f(offsets)).vertices[0].double().numpy()
    rest = landmark_points(neutral, data)
    total = np.zeros_like(rest)
    for src in sources:
        with torch.no_grad():
            posed = model(shape=f(shape), expr=f(src.expr), pose=f(src.pose),
                          translation=f(src.translation), static_offset=f(offsets)).vertices[0].double().numpy()
        points = landmark_points(posed, data)
        uvz = project_tracking(points, src.K)
        observed = np.asarray(src.landmarks, np.float64)[mp]
        residual = observed[:, :2] - uvz[:, :2]
        # The pixel residual at the landmark's depth, in the camera's image plane, then in the world
        # (FLIP maps world to camera and is its own inverse) and on the neutral head.
        in_camera = np.stack([residual[:, 0] * uvz[:, 2] / src.K[0, 0], residual[:, 1] * uvz[:, 2] / src.K[1, 1],
                              depth_weight * _depth_residual(observed, uvz, src.K)], 1)
        total += (in_camera @ FLIP) @ _rotation(rest, points)
    return total / len(sources)

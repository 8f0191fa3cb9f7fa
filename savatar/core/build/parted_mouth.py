"""A portrait's own teeth, carried by the teeth when the mouth opens (portraits with parted lips).

The head mesh closes the mouth with a curtain of triangles between the lips (mouth_interior.lip_curtain)
that stretches over the whole opening when the jaw opens. Built from a portrait whose lips are
parted, the curtain's Gaussians in the portrait's opening carry the portrait's teeth; left on the
curtain, they stretch with it, and a wider mouth shows the teeth drawn out into vertical streaks.
Rebound to the teeth (the upper part of the opening to the upper teeth, which move with the skull,
the lower part to the lower teeth, which move with the jaw), turned to face the portrait's camera
and moved back along its lines of sight to the teeth's depth, they look from that camera as they
did, and a wider mouth shows them at their own size at the top and bottom of the opening with the
cavity between them, while closing lips cover them.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from savatar.core.gaussians.binding import matrix_to_quat, quat_to_matrix

JAW_JOINT = 2  # the head model's joints: root, neck, jaw, eyes
LOWER_SHARE = 0.5  # jaw share of a curtain point from which it belongs to the lower teeth
DISC_FLATNESS = 0.15  # thickness of a disc facing the portrait's camera, relative to its smaller radius


def jaw_share(points: np.ndarray, tri: np.ndarray, jaw_weight: np.ndarray) -> np.ndarray:
    """(M,) in [0, 1]: how much each point moves with the jaw, from its triangle's corners' skinning
    weights interpolated at its barycentric coordinates. points: (M, 3) on (or near) the
    triangles tri (M, 3, 3); jaw_weight: (M, 3) the corners' jaw weights.

    On the curtain, which joins the upper lip (share 0) to the lower lip (share 1), it says how far
    down the opening a point lies, however wide the opening is."""
    a = tri[:, 0]
    e = np.stack([tri[:, 1] - a, tri[:, 2] - a], 2)  # (M, 3, 2)
    gram = np.einsum("mki,mkj->mij", e, e) + 1e-18 * np.eye(2)
    rhs = np.einsum("mki,mk->mi", e, points - a)
    s, t = np.linalg.solve(gram, rhs[..., None])[..., 0].T
    bary = np.clip(np.stack([1 - s - t, s, t], 1), 0.0, 1.0)
    bary /= np.maximum(bary.sum(1, keepdims=True), 1e-12)
    return np.clip((bary * jaw_weight).sum(1), 0.0, 1.0)


def teeth_anchors(points: np.ndarray, share: np.ndarray, upper: np.ndarray, upper_centres: np.ndarray,
                  lower: np.ndarray, lower_centres: np.ndarray) -> np.ndarray:
    """(M,) the face each point (M, 3) is to be bound to: the nearest of the upper teeth's faces
    upper (U,) (centres (U, 3)) for points with jaw share (M,) below LOWER_SHARE, else the nearest
    of the lower teeth's lower (L,) (centres (L, 3)); points and centres in one pose."""
    out = upper[cKDTree(upper_centres).query(points)[1]]
    down = share >= LOWER_SHARE
    if down.any():
        out[down] = lower[cKDTree(lower_centres).query(points[down])[1]]
    return out


def facing_discs(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
                 eye: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(quats (M, 4) wxyz, scales (M, 3)) of flat discs facing eye (3,) that cover, seen from it,
    what the Gaussians means (M, 3), quats (M, 4), scales (M, 3) cover: their covariance projected
    onto the plane across the line of sight, its axes in the plane, thin along the line.

    The curtain lies almost along the line of sight in a portrait's opening: its Gaussians are
    discs seen edge-on, deep and thin. Carried by the teeth and turned with the jaw, such a disc
    turns its depth into height, a streak down the opening; a disc facing the camera stays the
    size the portrait showed."""
    sight = torch.nn.functional.normalize(means.double() - eye.double(), dim=1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(sight)
    across = torch.nn.functional.normalize(torch.linalg.cross(up, sight, dim=1), dim=1)
    basis = torch.stack([across, torch.linalg.cross(sight, across, dim=1)], 2)  # (M, 3, 2)
    R = quat_to_matrix(quats.double())
    cov = R @ torch.diag_embed(scales.double() ** 2) @ R.transpose(1, 2)
    lam, vec = torch.linalg.eigh(basis.transpose(1, 2) @ cov @ basis)  # (M, 2), (M, 2, 2)
    a0, a1 = (basis @ vec).unbind(2)
    axes = torch.stack([a0, a1, torch.linalg.cross(a0, a1, dim=1)], 2)
    radii = lam.clamp_min(1e-18).sqrt()
    out = torch.cat([radii, DISC_FLATNESS * radii[:, :1]], 1)
    return matrix_to_quat(axes), out


def behind_lips(means: torch.Tensor, scales: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(means (M, 3), scales (M, 3)) moved away along the line of sight from a camera at the
    origin to distance depth (M,) (never closer than they are), their scales grown in proportion,
    so the camera sees them as before.

    The curtain lies between the lips' inner edges; the teeth lie behind them. Left at the
    curtain's depth, the portrait's teeth stay in front of the lips when the mouth closes and show
    through closed lips; at the teeth's depth the lips close over them."""
    dist = torch.linalg.vector_norm(means.double(), dim=1)
    ratio = torch.maximum(depth.double(), dist) / dist.clamp_min(1e-12)
    return means.double() * ratio[:, None], scales.double() * ratio[:, None]

"""Which bound Gaussians can be seen at all: those whose parent triangle does not face away
from the eye. On a closed head seen from outside, a surface facing away is behind one facing the
eye, so the viewer skips those Gaussians: fewer to sort and, on a software rasterizer, about a
third less fill, for a few pixels' difference on the silhouette.

The inside-out surfaces (mouth cavity, teeth, eye sockets) are seen through openings with their
normals pointing away, so they are never skipped."""
from __future__ import annotations

import numpy as np
import torch

from savatar.core.head.head_model import HeadModelData

# cos of the angle between a face's normal and the ray from the eye to it above which the face
# counts as facing away: 0.3 keeps faces up to about 17 degrees past edge-on, enough for
# Gaussians that sit a little off their face or reach past the silhouette.
MAX_FACING_AWAY_COS = 0.3
INNER_REGIONS = ("mouth_cavity", "upper_teeth", "lower_teeth", "eye_socket")


def skippable_faces(data: HeadModelData) -> torch.Tensor:
    """(F,) bool: faces that may be skipped when facing away (all but the inner regions')."""
    inner = np.zeros(len(data.v_template), bool)
    for name in INNER_REGIONS:
        if name in data.vertex_regions:
            inner[np.asarray(data.vertex_regions[name], np.int64)] = True
    return torch.from_numpy(~inner[np.asarray(data.faces)].any(1))


def visible_gaussians(verts: torch.Tensor, faces: torch.Tensor | np.ndarray, face_of: torch.Tensor,
                      eye: np.ndarray | torch.Tensor, skippable: torch.Tensor | None = None,
                      max_cos: float = MAX_FACING_AWAY_COS) -> torch.Tensor:
    """(N,) bool: Gaussians not skipped for an eye at (3,). verts: (V, 3) posed; faces: (F, 3);
    face_of: (N,) parent face of each Gaussian; skippable: (F,) bool (default: every face)."""
    faces = torch.as_tensor(faces, dtype=torch.long)
    v0, v1, v2 = (verts.index_select(0, faces[:, i]) for i in range(3))
    # cross(v1 - v0, v2 - v0) points along the face frame's normal axis (binding.face_frames).
    normal = torch.linalg.cross(v1 - v0, v2 - v0, dim=1)
    ray = (v0 + v1 + v2) / 3.0 - torch.as_tensor(np.asarray(eye, np.float32), dtype=verts.dtype)
    dot = (normal * ray).sum(1)
    keep = dot < max_cos * torch.linalg.vector_norm(normal, dim=1) * torch.linalg.vector_norm(ray, dim=1)
    if skippable is not None:
        keep |= ~skippable
    return keep[face_of.long()]

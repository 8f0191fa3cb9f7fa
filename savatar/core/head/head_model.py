"""One parametric head interface for FLAME and the bundled open head model.

Both models share FLAME's structure (docs/conventions.md): template + shape and expression blendshapes,
pose correctives, 5 joints (root, neck, jaw, left eye, right eye) skinned by linear blend skinning,
and a landmark embedding (face index + barycentric coordinates per landmark).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
NUM_JOINTS = 5
POSE_DIM = 3 * NUM_JOINTS  # 15 axis-angle numbers, FLAME layout


@dataclass
class HeadModelData:
    """Plain arrays that define a head model. Shapes with V vertices, F faces, L landmarks.

    v_template: (V, 3) float32, metres
    faces: (F, 3) int64
    shapedirs: (V, 3, S) float32, identity basis
    exprdirs: (V, 3, E) float32, expression basis
    posedirs: (V, 3, 36) float32, pose correctives on (R_j - I) of the 4 non-root joints
    j_regressor: (5, V) float32
    parents: (5,) int64, parent joint index, -1 for the root
    lbs_weights: (V, 5) float32, rows sum to 1
    lmk_faces: (L,) int64, lmk_bary: (L, 3) float32; lmk_mediapipe: (L,) MediaPipe Face Mesh
    index of each landmark, when the landmarks are MediaPipe's (the tracker needs this)
    vertex_colors: (V, 3) float32 in [0, 1] (base colours for shaded renders)
    """

    name: str
    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    j_regressor: np.ndarray
    parents: np.ndarray
    lbs_weights: np.ndarray
    lmk_faces: np.ndarray
    lmk_bary: np.ndarray
    vertex_colors: np.ndarray | None = None
    shape_names: list[str] = field(default_factory=list)
    expr_names: list[str] = field(default_factory=list)
    vertex_regions: dict[str, np.ndarray] = field(default_factory=dict)
    lmk_mediapipe: np.ndarray | None = None  # (L,) MediaPipe Face Mesh index of each landmark

    def vertex_labels(self) -> tuple[np.ndarray, list[str]]:
        """(region index (V,) of each vertex, -1 outside all; the regions' names)."""
        names = list(self.vertex_regions)
        label = np.full(len(self.v_template), -1, np.int64)
        for i, n in enumerate(names):
            label[np.asarray(self.vertex_regions[n], np.int64)] = i
        return label, names

    def face_regions(self) -> tuple[np.ndarray, list[str]]:
        """(region index (F,) of each face: its first vertex's, -1 outside all; the regions' names)."""
        label, names = self.vertex_labels()
        return label[self.faces[:, 0]], names

    def validate(self) -> None:
        """Raise ValueError naming the first array whose shape or values are inconsistent."""
        v = self.v_template.shape[0]
        checks = {
            "v_template": (self.v_template, (v, 3)),
            "shapedirs": (self.shapedirs, (v, 3, None)),
            "exprdirs": (self.exprdirs, (v, 3, None)),
            "posedirs": (self.posedirs, (v, 3, 36)),
            "j_regressor": (self.j_regressor, (NUM_JOINTS, v)),
            "lbs_weights": (self.lbs_weights, (v, NUM_JOINTS)),
            "faces": (self.faces, (None, 3)),
            "lmk_bary": (self.lmk_bary, (None, 3)),
            "parents": (self.parents, (NUM_JOINTS,)),
        }
        for name, (arr, shape) in checks.items():
            if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
                raise ValueError(f"{self.name}: {name} has shape {arr.shape}, expected {shape}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError(f"{self.name}: {name} contains NaN or Inf")
        if self.faces.min() < 0 or self.faces.max() >= v:
            raise ValueError(f"{self.name}: faces index outside 0..{v - 1}")
        if self.lmk_faces.shape[0] != self.lmk_bary.shape[0]:
            raise ValueError(f"{self.name}: lmk_faces and lmk_bary disagree on the landmark count")
        if len(self.lmk_faces) and (self.lmk_faces.min() < 0 or self.lmk_faces.max() >= len(self.faces)):
            raise ValueError(f"{self.name}: lmk_faces index outside 0..{len(self.faces) - 1}")
        if self.lmk_mediapipe is not None and (len(self.lmk_mediapipe) != len(self.lmk_faces)
                                               or self.lmk_mediapipe.min(initial=0) < 0
                                               or self.lmk_mediapipe.max(initial=0) >= 478):
            raise ValueError(f"{self.name}: lmk_mediapipe must give a MediaPipe index 0..477 for each landmark")
        if self.expr_names and len(self.expr_names) != self.exprdirs.shape[2]:
            raise ValueError(f"{self.name}: {len(self.expr_names)} expression names for {self.exprdirs.shape[2]} components")


@dataclass
class HeadOutput:
    """vertices: (B, V, 3); landmarks: (B, L, 3); joints: (B, 5, 3) posed joint positions."""

    vertices: torch.Tensor
    landmarks: torch.Tensor
    joints: torch.Tensor


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues. aa: (..., 3) -> (..., 3, 3); smooth at zero (Taylor terms below 1e-4 rad)."""
    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2.clamp_min(1e-12))
    small = theta2 < 1e-8
    sin_t = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    cos_t = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + sin_t[..., None] * k + cos_t[..., None] * (k @ k)


class HeadModel(torch.nn.Module):
    """Batched, differentiable FLAME-structured head (float32, any device).

    forward(shape (B, S), expr (B, E), pose (B, 15), translation (B, 3), static_offset (V, 3) or
    (B, V, 3)) -> HeadOutput. Missing arguments are zeros; shorter shape/expr vectors are padded.
    """

    def __init__(self, data: HeadModelData):
        super().__init__()
        data.validate()
        self.data = data
        self.name = data.name
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.register_buffer("v_template", f32(data.v_template))
        self.register_buffer("faces", torch.as_tensor(np.asarray(data.faces, dtype=np.int64)))
        self.register_buffer("shapedirs", f32(data.shapedirs))
        self.register_buffer("exprdirs", f32(data.exprdirs))
        self.register_buffer("posedirs", f32(data.posedirs).reshape(-1, 36).T.contiguous())  # (36, V*3)
        # Blendshapes as (S + E, V*3) so one matmul applies them (einsum over (V, 3, S) is slow).
        self.register_buffer("_blend", torch.cat([self.shapedirs.reshape(-1, self.shapedirs.shape[2]).T,
                                                  self.exprdirs.reshape(-1, self.exprdirs.shape[2]).T]).contiguous())
        self.register_buffer("j_regressor", f32(data.j_regressor))
        self.register_buffer("lbs_weights", f32(data.lbs_weights))
        self.register_buffer("lmk_faces", torch.as_tensor(np.asarray(data.lmk_faces, dtype=np.int64)))
        self.register_buffer("lmk_bary", f32(data.lmk_bary))
        self.register_buffer("_lmk_vertices", self.faces[self.lmk_faces])  # (L, 3)
        self.parents = [int(p) for p in data.parents]

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_shape(self) -> int:
        return self.shapedirs.shape[2]

    @property
    def num_expr(self) -> int:
        return self.exprdirs.shape[2]

    def _coeffs(self, x: torch.Tensor | None, n: int, batch: int, name: str, exact: bool = False) -> torch.Tensor:
        ref = self.v_template
        if x is None:
            return ref.new_zeros(batch, n)
        x = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
        if x.ndim == 1:
            x = x[None].expand(batch, -1)
        if x.ndim != 2 or x.shape[0] != batch or x.shape[1] > n or (exact and x.shape[1] != n):
            size = n if exact else f"<= {n}"
            raise ValueError(f"{name} must have shape (B, {size}) with B = {batch}, got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf")
        if x.shape[1] < n:
            x = torch.cat([x, x.new_zeros(batch, n - x.shape[1])], 1)
        return x

    @staticmethod
    def _batch_size(*xs) -> int:
        for x in xs:
            if x is not None and torch.as_tensor(x).ndim >= 2:
                return torch.as_tensor(x).shape[0]
        return 1

    def forward(self, shape=None, expr=None, pose=None, translation=None, static_offset=None) -> HeadOutput:
        b = self._batch_size(shape, expr, pose, translation)
        shape = self._coeffs(shape, self.num_shape, b, "shape")
        expr = self._coeffs(expr, self.num_expr, b, "expr")
        pose = self._coeffs(pose, POSE_DIM, b, "pose", exact=True)
        translation = self._coeffs(translation, 3, b, "translation", exact=True)

        v = self.v_template + (torch.cat([shape, expr], 1) @ self._blend).reshape(b, -1, 3)
        if static_offset is not None:
            off = torch.as_tensor(static_offset, dtype=v.dtype, device=v.device)
            if off.shape[-2:] != v.shape[-2:] or off.ndim not in (2, 3):
                raise ValueError(f"static_offset must have shape (V, 3) or (B, V, 3) with V = {self.num_vertices}")
            if not torch.isfinite(off).all():
                raise ValueError("static_offset contains NaN or Inf")
            v = v + off
        verts, joints = self.lbs(v, pose)
        verts = verts + translation[:, None]
        joints = joints + translation[:, None]
        return HeadOutput(verts, self.landmarks(verts), joints)

    def lbs(self, v_shaped: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear blend skinning. v_shaped: (B, V, 3), pose: (B, 15) -> (verts (B, V, 3), joints (B, 5, 3))."""
        b = v_shaped.shape[0]
        joints = torch.einsum("jv,bvc->bjc", self.j_regressor, v_shaped)
        rot = axis_angle_to_matrix(pose.reshape(b, NUM_JOINTS, 3))  # (B, 5, 3, 3)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).reshape(b, 36)
        v_posed = v_shaped + (pose_feature @ self.posedirs).reshape(b, -1, 3)

        # Chain the joint transforms from the root (5 joints: a Python loop over joints is fine).
        rel = joints.clone()
        rel[:, 1:] = joints[:, 1:] - joints[:, self.parents[1:]]
        local = torch.cat([rot, rel[..., None]], -1)  # (B, 5, 3, 4)
        bottom = rot.new_tensor([0, 0, 0, 1]).expand(b, NUM_JOINTS, 1, 4)
        local = torch.cat([local, bottom], -2)  # (B, 5, 4, 4)
        chain = [local[:, 0]]
        for j in range(1, NUM_JOINTS):
            chain.append(chain[self.parents[j]] @ local[:, j])
        world = torch.stack(chain, 1)  # (B, 5, 4, 4)
        posed_joints = world[:, :, :3, 3]
        # Remove the rest-pose joint position so the transforms act on rest-pose vertices.
        offset = (world[:, :, :3, :3] @ joints[..., None])[..., 0]
        skin = world.clone()
        skin[:, :, :3, 3] = world[:, :, :3, 3] - offset
        t = (self.lbs_weights @ skin[:, :, :3].reshape(b, NUM_JOINTS, 12)).reshape(b, -1, 3, 4)  # (B, V, 3, 4)
        # Elementwise multiply-and-sum: a batched matmul over V tiny 3x3 matrices is much slower.
        verts = (t[..., :3] * v_posed[:, :, None, :]).sum(-1) + t[..., 3]
        return verts, posed_joints

    def landmarks(self, verts: torch.Tensor) -> torch.Tensor:
        """verts: (B, V, 3) -> (B, L, 3) from the landmark embedding."""
        tri = verts[:, self._lmk_vertices]  # (B, L, 3, 3)
        return (tri * self.lmk_bary[None, :, :, None]).sum(2)

"""Binding of Gaussians to the triangles of a head mesh (docs/conventions.md, "Gaussians bound to a head mesh").

Face frames, quaternion helpers, the deformation from face-local storage to world Gaussians, and
the initial layout of a new avatar on a head model's template.
"""
from __future__ import annotations


import numpy as np
import torch

from savatar.core.gaussians.gaussians import GaussianAvatar, WorldGaussians, rgb_to_sh0, sh_coeff_count
from savatar.core.head.head_model import HeadModelData
from savatar.core.head.mesh_ops import face_areas

# Norms below this are treated as this, so degenerate (zero-area or zero-edge) faces give finite
# frames and gradients instead of NaN.
_EPS = 1e-12

DEFAULT_REGION_DENSITY: dict[str, float] = {
    "face": 3.0,
    "left_eyeball": 2.0,
    "right_eyeball": 2.0,
    "mouth_cavity": 0.5,
    "upper_teeth": 1.0,
    "lower_teeth": 1.0,
    "scalp": 1.0,
    "neck": 0.7,
    "eye_socket": 0.3,
}

# Opacity at initialisation, and the normal-axis (local y) scale relative to the in-plane scale:
# flat discs lying in their triangle.
_INIT_OPACITY = 0.9
_INIT_FLATNESS = 0.15  # anisotropy 6.7, safely under the anti-spike bound of 10
_INIT_COVERAGE = 1.7
_PLASTIC = 1.32471795724474602596  # R2 sequence: steps 1/p and 1/p^2
_R2_STEP = np.array([1 / _PLASTIC, 1 / _PLASTIC ** 2])


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_EPS)


def face_frames(verts: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-face frames of a mesh.

    verts: (..., V, 3); faces: (F, 3) integer ->
    R (..., F, 3, 3) with columns a0 (along v1 - v0), a1 (unit normal), a2 (= a0 x a1);
    centre (..., F, 3) centroid; k (..., F) face scale (mean of base edge |v1 - v0| and height).
    """
    faces = torch.as_tensor(faces, device=verts.device, dtype=torch.long)
    v0 = verts[..., faces[:, 0], :]
    v1 = verts[..., faces[:, 1], :]
    v2 = verts[..., faces[:, 2], :]
    e1 = v1 - v0
    e2 = v2 - v0
    a0 = _normalize(e1)
    a1 = _normalize(torch.linalg.cross(a0, e2, dim=-1))
    a2 = _normalize(torch.linalg.cross(a0, a1, dim=-1))
    R = torch.stack([a0, a1, a2], dim=-1)
    centre = (v0 + v1 + v2) / 3.0
    edge = torch.linalg.vector_norm(e1, dim=-1)
    height = (a2 * e2).sum(-1).abs()
    k = 0.5 * (edge + height)
    return R, centre, k


def _shepperd_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """Constants (9, 16), (16,) with cand = R.flatten() @ A + b: row i of cand (4 x 4) is the
    quaternion times 4 q_i, i.e. the Shepperd candidate that uses component i as the pivot."""
    # (row, col) -> list of (sign, flat index of R) terms; the diagonal also gets the constant 1.
    m = lambda i, j: 3 * i + j  # noqa: E731
    terms = {
        (0, 0): [(1, m(0, 0)), (1, m(1, 1)), (1, m(2, 2))],
        (1, 1): [(1, m(0, 0)), (-1, m(1, 1)), (-1, m(2, 2))],
        (2, 2): [(-1, m(0, 0)), (1, m(1, 1)), (-1, m(2, 2))],
        (3, 3): [(-1, m(0, 0)), (-1, m(1, 1)), (1, m(2, 2))],
        (0, 1): [(1, m(2, 1)), (-1, m(1, 2))], (0, 2): [(1, m(0, 2)), (-1, m(2, 0))],
        (0, 3): [(1, m(1, 0)), (-1, m(0, 1))], (1, 2): [(1, m(1, 0)), (1, m(0, 1))],
        (1, 3): [(1, m(0, 2)), (1, m(2, 0))], (2, 3): [(1, m(1, 2)), (1, m(2, 1))],
    }
    A = torch.zeros(9, 4, 4, dtype=torch.float64)
    for (i, j), entries in terms.items():
        for sign, idx in entries:
            A[idx, i, j] = A[idx, j, i] = sign  # the candidate table is symmetric
    b = torch.eye(4, dtype=torch.float64)
    return A.reshape(9, 16), b.reshape(16)


_SHEPPERD_A, _SHEPPERD_B = _shepperd_tables()
_DIAGONAL = torch.tensor([0, 5, 10, 15])


def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) wxyz, sign chosen so w >= 0.

    All four Shepperd candidates come from one small matmul; per matrix the one with the largest
    pivot |q_i| (>= 1/2 for a rotation) is kept, so nothing divides by a small number. Branch by
    index selection, differentiable, and a few ops in total (this runs once per face per frame).
    """
    batch = R.shape[:-2]
    flat = R.reshape(-1, 9)
    cand16 = torch.addmm(_SHEPPERD_B.to(R), flat, _SHEPPERD_A.to(R))
    cand = cand16.view(-1, 4, 4)
    # 4 q_i^2, copied contiguous: argmax over a strided diagonal view is several times slower.
    diag = cand16[:, _DIAGONAL.to(R.device)]
    best = diag.argmax(-1, keepdim=True)  # (M, 1)
    row = cand.gather(1, best[:, :, None].expand(-1, 1, 4))[:, 0]  # 4 q_best q
    pivot = diag.gather(1, best)  # 4 q_best^2
    q = row * torch.rsqrt(pivot.clamp_min(1e-2) * 4.0)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(*batch, 4)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of quaternions (..., 4) wxyz (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Quaternions (..., 4) wxyz (normalized here) -> rotation matrices (..., 3, 3)."""
    w, x, y, z = _normalize(q).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def _faces_of(avatar: GaussianAvatar) -> np.ndarray:
    """The head's triangles (F, 3) for an avatar whose caller did not pass them."""
    head = avatar.metadata.get("head_data")
    if head is not None:
        return head.faces
    if avatar.head_model == "open-head":
        from savatar.core.head.open_head import load_open_head_data

        return load_open_head_data().faces
    raise ValueError(f"deform needs the faces of head model {avatar.head_model!r}: pass faces=")


def deform(avatar: GaussianAvatar, verts: torch.Tensor,
           faces: torch.Tensor | np.ndarray | None = None) -> WorldGaussians:
    """Face-local avatar + posed mesh vertices (V, 3) -> world Gaussians (N of them).

    faces: (F, 3) triangles of the head model; by default the open head model's (or
    avatar.metadata["head_data"].faces when the avatar was loaded from a file).
    Frames and their quaternions are computed once per face (F) and gathered per Gaussian.
    Differentiable w.r.t. verts and every avatar tensor.
    """
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (V, 3), got {tuple(verts.shape)}")
    R, centre, k = face_frames(verts, _faces_of(avatar) if faces is None else faces)
    idx = avatar.face.long()
    # One packed per-face table (F, 13) = [k R (9, row-major) | centre (3) | k (1)] gathered with
    # a single index_select: one large gather is cheaper than several small ones.
    table = torch.cat([(R * k[:, None, None]).reshape(-1, 9), centre, k[:, None]], 1)
    g = table.index_select(0, idx)  # (N, 13)
    # einsum (batched matmul) measured faster here than multiply-and-sum over (N, 3, 3).
    means = torch.einsum("nij,nj->ni", g[:, :9].reshape(-1, 3, 3), avatar.mean) + g[:, 9:12]
    scales = g[:, 12:13] * torch.exp(avatar.log_scale)
    # Quaternion product on contiguous component rows (4, N): elementwise ops on the strided
    # columns of an (N, 4) tensor cost about twice as much.
    a = matrix_to_quat(R).T.contiguous().index_select(1, idx)
    w, x, y, z = _hamilton_rows(a.unbind(0), avatar.rot.T.contiguous().unbind(0))
    inv = torch.rsqrt((w * w).addcmul_(x, x).addcmul_(y, y).addcmul_(z, z).clamp_min_(_EPS * _EPS))
    quats = torch.stack([w * inv, x * inv, y * inv, z * inv], 1)
    return WorldGaussians(means=means, quats=quats, scales=scales,
                          opacities=torch.sigmoid(avatar.opacity_logit), sh=avatar.sh)


def rebind(avatar: GaussianAvatar, idx: np.ndarray, target: np.ndarray, verts: torch.Tensor,
           faces: torch.Tensor | np.ndarray, means: torch.Tensor | None = None,
           quats: torch.Tensor | None = None, scales: torch.Tensor | None = None) -> None:
    """Bind the Gaussians idx (M,) to the faces target (M,) instead, in place, such that with the
    mesh posed as verts (V, 3) (faces (F, 3)) they stay where they are, as large and turned the
    same (deform's inverse on the new faces); in other poses they follow their new faces.
    means (M, 3), quats (M, 4) wxyz, scales (M, 3): world positions, rotations and scales in
    that pose to give them instead of the ones they have."""
    idx = torch.as_tensor(np.asarray(idx, np.int64))
    target = torch.as_tensor(np.asarray(target, np.int64))
    with torch.no_grad():
        R, centre, k = face_frames(verts.double(), faces)
        k = k.clamp_min(_EPS)
        old, new = avatar.face[idx].long(), target
        if means is None:
            means = torch.einsum("nij,nj->ni", R[old] * k[old, None, None], avatar.mean[idx].double()) + centre[old]
        if quats is None:
            quats = quat_multiply(matrix_to_quat(R[old]), avatar.rot[idx].double())
        if scales is None:
            scales = k[old, None] * torch.exp(avatar.log_scale[idx].double())
        # Local position R^T (p - c) / k, scale relative to the new face's, rotation q(R_new)^-1 q.
        mean = torch.einsum("nji,nj->ni", R[new], means.double() - centre[new]) / k[new, None]
        inv = matrix_to_quat(R[new]) * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
        avatar.face[idx] = new.to(avatar.face.dtype)
        avatar.mean[idx] = mean.to(avatar.mean.dtype)
        avatar.log_scale[idx] = torch.log(scales.double() / k[new, None]).to(avatar.log_scale.dtype)
        avatar.rot[idx] = quat_multiply(inv, quats.double()).to(avatar.rot.dtype)


def _hamilton_rows(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Hamilton product a * b of quaternions given as component tensors (w, x, y, z), each (N,)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return ((aw * bw).addcmul_(ax, bx, value=-1).addcmul_(ay, by, value=-1).addcmul_(az, bz, value=-1),
            (aw * bx).addcmul_(ax, bw).addcmul_(ay, bz).addcmul_(az, by, value=-1),
            (aw * by).addcmul_(ax, bz, value=-1).addcmul_(ay, bw).addcmul_(az, bx),
            (aw * bz).addcmul_(ax, by).addcmul_(ay, bx, value=-1).addcmul_(az, bw))


def _face_region_weights(data: HeadModelData, density: dict[str, float]) -> np.ndarray:
    """(F,) density weight of each face's majority region (1.0 for faces outside every region)."""
    label, names = data.vertex_labels()
    fl = label[data.faces]  # (F, 3)
    # Majority of three labels: l0 if it matches either other one, else l1 if l1 == l2, else l0.
    major = np.where((fl[:, 1] == fl[:, 2]) & (fl[:, 0] != fl[:, 1]), fl[:, 1], fl[:, 0])
    table = np.array([float(density.get(n, 1.0)) for n in names] + [1.0])
    return table[major]  # label -1 picks the trailing 1.0


def init_avatar(data: HeadModelData, count: int, seed: int = 0,
                region_density: dict[str, float] | None = None, sh_degree: int = 0,
                bake_light: bool = False) -> GaussianAvatar:
    """A new avatar of `count` Gaussians on the head model's template (float32, deterministic).

    Faces get counts proportional to area x region density (systematic sampling); positions
    on a face follow a low-discrepancy sequence, uniform and evenly spread; each Gaussian is a flat disc (local y = normal axis thin) whose
    in-plane area is its share of the triangle; colour from the interpolated vertex colours.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    density = dict(DEFAULT_REGION_DENSITY if region_density is None else region_density)
    verts = np.asarray(data.v_template, np.float64)
    faces = np.asarray(data.faces, np.int64)
    area = face_areas(verts, faces)
    weight = area * _face_region_weights(data, density)
    if not weight.sum() > 0:
        raise ValueError("no face has positive area x density weight")
    rng = np.random.default_rng(seed)
    # Systematic sampling: every face gets its expected count to within one, which leaves far
    # fewer bare patches than independent draws.
    cdf = np.cumsum(weight / weight.sum())
    face = np.minimum(np.searchsorted(cdf, (rng.random() + np.arange(count)) / count, side="right"), len(faces) - 1)
    # Within a face, the j-th of its Gaussians takes the j-th point of the R2 low-discrepancy
    # sequence (from a random start per face): evenly spread, so fewer gaps than random points.
    first = np.searchsorted(face, face, side="left")  # face is sorted: index of each face's first
    rank = np.arange(count) - first
    start = rng.random((len(faces), 2))[face]
    uv = np.mod(start + (rank[:, None] + 1) * _R2_STEP, 1.0)
    flip = uv.sum(1) > 1  # reflect into the triangle so the points stay uniform over it
    uv[flip] = 1 - uv[flip]
    order = rng.permutation(count)
    face, uv = face[order], uv[order]
    bary = np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)  # (N, 3)

    tri = verts[faces[face]]  # (N, 3, 3)
    point = (bary[:, :, None] * tri).sum(1)
    R, centre, k = (t.numpy() for t in face_frames(torch.from_numpy(verts), torch.from_numpy(faces)))
    k = np.maximum(k, _EPS)
    mean = np.einsum("nji,nj->ni", R[face], point - centre[face]) / k[face, None]  # R^T (p - c) / k

    # Disc size from the expected share of area (not the drawn count, which would give a lone
    # Gaussian on a big face a huge disc), enlarged so neighbouring discs overlap without gaps.
    expected = count * weight / weight.sum()
    radius = _INIT_COVERAGE * np.sqrt(area[face] / np.maximum(expected[face], 1e-9) / np.pi) / k[face]
    radius = np.maximum(radius, 1e-6)
    log_scale = np.log(np.stack([radius, _INIT_FLATNESS * radius, radius], 1))

    if data.vertex_colors is not None:
        rgb = (bary[:, :, None] * np.asarray(data.vertex_colors, np.float64)[faces[face]]).sum(1)
    else:
        rgb = np.full((count, 3), 0.5)
    if bake_light:
        # Soft light from the upper front, baked into the colour as a captured avatar's would
        # be, so the shape reads on screen; the frame's second axis is the face normal.
        light = np.array([0.25, 0.55, 1.0]) / np.linalg.norm([0.25, 0.55, 1.0])
        lambert = np.clip(R[face][:, :, 1] @ light, 0.0, 1.0)
        rgb = rgb * (0.55 + 0.5 * lambert)[:, None]
    sh = torch.zeros(count, sh_coeff_count(sh_degree), 3)
    sh[:, 0] = rgb_to_sh0(torch.from_numpy(rgb).float())

    rot = torch.zeros(count, 4)
    rot[:, 0] = 1.0
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    return GaussianAvatar(
        face=torch.from_numpy(face.astype(np.int64)),
        mean=f32(mean),
        rot=rot,
        log_scale=f32(log_scale),
        opacity_logit=torch.full((count,), float(np.log(_INIT_OPACITY / (1 - _INIT_OPACITY)))),
        sh=sh,
        head_model=data.name,
        shape=torch.zeros(data.shapedirs.shape[2]),
        static_offset=torch.zeros(len(verts), 3),
        default_expr=torch.zeros(data.exprdirs.shape[2]),
    )

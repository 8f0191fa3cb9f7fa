"""Face frames, quaternion helpers, deform and init_avatar (savatar.core.gaussians.binding)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from savatar.core.gaussians.binding import (deform, face_frames, init_avatar, matrix_to_quat, quat_multiply,
                                            quat_to_matrix)
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.head.head_model import HeadModel, HeadModelData, axis_angle_to_matrix
from savatar.core.head.mesh_ops import face_areas
from savatar.core.head.open_head import load_open_head_data


@pytest.fixture(scope="module")
def open_head() -> HeadModelData:
    return load_open_head_data()


def _random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return axis_angle_to_matrix(torch.randn(n, 3, generator=g, dtype=torch.float64) * 2.0)


def test_matrix_quat_round_trip_including_near_180_degrees() -> None:
    R = _random_rotations(500)
    # Rotations by ~pi about each axis exercise every pivot branch.
    flips = axis_angle_to_matrix(torch.tensor([[np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi],
                                               [np.pi - 1e-6, 1e-3, 0]], dtype=torch.float64))
    R = torch.cat([R, flips, torch.eye(3, dtype=torch.float64)[None]])
    q = matrix_to_quat(R)
    assert torch.allclose(q.norm(dim=-1), torch.ones(len(R), dtype=torch.float64), atol=1e-12)
    assert torch.allclose(quat_to_matrix(q), R, atol=1e-9)
    assert (q[:, 0] >= 0).all()
    batched = matrix_to_quat(R[:10].float().reshape(2, 5, 3, 3))
    assert batched.shape == (2, 5, 4) and batched.dtype == torch.float32
    assert torch.allclose(batched.reshape(10, 4).double(), q[:10], atol=1e-6)


def test_quat_multiply_matches_matrix_product() -> None:
    Ra, Rb = _random_rotations(50, 1), _random_rotations(50, 2)
    q = quat_multiply(matrix_to_quat(Ra), matrix_to_quat(Rb))
    assert torch.allclose(quat_to_matrix(q), Ra @ Rb, atol=1e-9)


def test_face_frame_of_hand_made_triangle() -> None:
    v = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.5, 3.0, 0.0]], dtype=torch.float64)
    R, c, k = face_frames(v, torch.tensor([[0, 1, 2]]))
    # a0 along +x, normal a0 x (v2 - v0) = +z, a2 = a0 x a1 = x x z = -y.
    expected = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)  # columns a0 a1 a2
    assert torch.allclose(R[0], expected)
    assert torch.allclose(c[0], torch.tensor([2.5 / 3, 1.0, 0.0], dtype=torch.float64))
    assert torch.isclose(k[0], torch.tensor((2.0 + 3.0) / 2, dtype=torch.float64))


def test_deform_formulas_on_one_triangle() -> None:
    v = torch.tensor([[0.1, 0.2, 0.3], [1.1, 0.4, 0.2], [0.3, 1.5, 0.9]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    av = _tiny_avatar(n=3, seed=4)
    w = deform(av, v, faces)
    # Independent frame from numpy, per docs/conventions.md.
    v0, v1, v2 = v.numpy()
    a0 = (v1 - v0) / np.linalg.norm(v1 - v0)
    a1 = np.cross(a0, v2 - v0)
    a1 /= np.linalg.norm(a1)
    a2 = np.cross(a0, a1)
    R = np.stack([a0, a1, a2], 1)
    k = (np.linalg.norm(v1 - v0) + abs(a2 @ (v2 - v0))) / 2
    c = (v0 + v1 + v2) / 3
    for i in range(3):
        assert np.allclose(w.means[i].numpy(), k * R @ av.mean[i].numpy() + c)
        assert np.allclose(w.scales[i].numpy(), k * np.exp(av.log_scale[i].numpy()))
        expected_rot = R @ quat_to_matrix(av.rot[i]).numpy()
        assert np.allclose(quat_to_matrix(w.quats[i]).numpy(), expected_rot)
    assert torch.allclose(w.opacities, torch.sigmoid(av.opacity_logit))
    assert w.sh is av.sh


def test_face_frames_orthonormal_with_normal_as_a1(open_head: HeadModelData) -> None:
    v = torch.from_numpy(open_head.v_template).double()
    R, _, k = face_frames(v, torch.from_numpy(open_head.faces))
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye, atol=1e-9)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(R), dtype=torch.float64), atol=1e-9)
    tri = v[torch.from_numpy(open_head.faces)]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    n = n / n.norm(dim=-1, keepdim=True)
    assert torch.allclose(R[..., 1], n, atol=1e-9)
    assert (k > 0).all()


def test_face_frames_batched_and_degenerate() -> None:
    v = torch.zeros(2, 3, 3)
    v[1] = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    R, c, k = face_frames(v, torch.tensor([[0, 1, 2]]))
    assert R.shape == (2, 1, 3, 3) and c.shape == (2, 1, 3) and k.shape == (2, 1)
    assert torch.isfinite(R).all() and k[0, 0] == 0


def test_rigid_head_rotation_rotates_gaussians_rigidly(open_head: HeadModelData) -> None:
    # float64 throughout. The skinning weights sum to 1 only to float32 precision (~1e-7), so the
    # skinned mesh is rigid to ~1e-8 m; sliver triangles (edges ~3e-4 m) turn that into ~1e-4 of
    # frame rotation, hence the rotation tolerance here and the exact check on rotated vertices.
    model = HeadModel(open_head).double()
    av = _double(init_avatar(open_head, 2000, seed=1))
    aa = torch.tensor([0.3, -0.5, 0.2], dtype=torch.float64)
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, :3] = aa
    rest = deform(av, model().vertices[0])
    posed = deform(av, model(pose=pose).vertices[0])
    # Root joint rotation about the root joint position.
    root = model().joints[0, 0]
    Rg = axis_angle_to_matrix(aa)
    assert torch.allclose(posed.means, (rest.means - root) @ Rg.T + root, atol=1e-7)
    assert torch.allclose(quat_to_matrix(posed.quats), Rg @ quat_to_matrix(rest.quats), atol=3e-4)
    assert torch.allclose(posed.scales, rest.scales, rtol=1e-3)
    exact = deform(av, (model().vertices[0] - root) @ Rg.T + root)
    assert torch.allclose(exact.means, (rest.means - root) @ Rg.T + root, atol=1e-12)
    assert torch.allclose(quat_to_matrix(exact.quats), Rg @ quat_to_matrix(rest.quats), atol=1e-9)
    assert torch.allclose(exact.scales, rest.scales, rtol=1e-9)
    assert len(posed) == len(av) == 2000
    assert torch.equal(av.face, init_avatar(open_head, 2000, seed=1).face)


def _double(av: GaussianAvatar) -> GaussianAvatar:
    return dataclasses.replace(av, mean=av.mean.double(), rot=av.rot.double(), log_scale=av.log_scale.double())


def _tiny_mesh() -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor([[0.0, 0, 0], [1, 0.1, 0], [0.2, 1, 0.1], [0.9, 1.1, 0.5]], dtype=torch.float64)
    return v, torch.tensor([[0, 1, 2], [1, 3, 2]])


def _tiny_avatar(n: int, seed: int, faces: int = 1) -> GaussianAvatar:
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    return GaussianAvatar(
        face=torch.arange(n) % faces, mean=torch.randn(n, 3, generator=g, dtype=d),
        rot=torch.randn(n, 4, generator=g, dtype=d), log_scale=torch.randn(n, 3, generator=g, dtype=d) * 0.3,
        opacity_logit=torch.randn(n, generator=g, dtype=d), sh=torch.randn(n, 1, 3, generator=g, dtype=d),
        head_model="test", shape=torch.zeros(0), static_offset=torch.zeros(4, 3), default_expr=torch.zeros(0))


def test_deform_gradcheck() -> None:
    verts, faces = _tiny_mesh()
    base = _tiny_avatar(n=5, seed=3, faces=2)

    def f(mean, rot, log_scale, v):
        av = GaussianAvatar(face=base.face, mean=mean, rot=rot, log_scale=log_scale,
                            opacity_logit=base.opacity_logit, sh=base.sh, head_model="test",
                            shape=base.shape, static_offset=base.static_offset, default_expr=base.default_expr)
        w = deform(av, v, faces)
        return w.means, w.quats, w.scales

    inputs = tuple(t.clone().requires_grad_(True) for t in (base.mean, base.rot, base.log_scale, verts))
    assert torch.autograd.gradcheck(f, inputs)


def _synthetic_head() -> HeadModelData:
    """Two equal-area unit squares side by side: left is 'face', right is 'neck'."""
    xs = np.array([0.0, 1.0, 2.0])
    v = np.array([[x, y, 0.0] for y in (0.0, 1.0) for x in xs], np.float32)  # 0 1 2 / 3 4 5
    faces = np.array([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4]], np.int64)
    n = len(v)
    return HeadModelData(
        name="synthetic", v_template=v, faces=faces, shapedirs=np.zeros((n, 3, 2), np.float32),
        exprdirs=np.zeros((n, 3, 3), np.float32), posedirs=np.zeros((n, 3, 36), np.float32),
        j_regressor=np.full((5, n), 1.0 / n, np.float32), parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=np.tile(np.array([1, 0, 0, 0, 0], np.float32), (n, 1)),
        lmk_faces=np.zeros(0, np.int64), lmk_bary=np.zeros((0, 3), np.float32),
        vertex_colors=np.tile(np.array([0.2, 0.4, 0.6], np.float32), (n, 1)),
        vertex_regions={"face": np.array([0, 3]), "neck": np.array([1, 2, 4, 5])})


def test_init_avatar_density_and_count() -> None:
    data = _synthetic_head()
    # Majority regions: [0, 1, 4] neck, [0, 4, 3] face, the right square's two triangles neck.
    av = init_avatar(data, 6000, seed=0, region_density={"face": 3.0, "neck": 1.0})
    assert len(av) == 6000
    counts = np.bincount(av.face.numpy(), minlength=4)
    assert counts[1] > 2.5 * counts[0] and counts[1] > 2.5 * counts[2]


def test_init_avatar_open_head_defaults(open_head: HeadModelData) -> None:
    av = init_avatar(open_head, 5000, seed=7, sh_degree=2)
    assert len(av) == 5000 and av.sh.shape == (5000, 9, 3) and av.sh_degree == 2
    assert torch.all(av.sh[:, 1:] == 0)
    assert av.shape.shape == (open_head.shapedirs.shape[2],)
    assert av.static_offset.shape == open_head.v_template.shape
    assert av.default_expr.shape == (open_head.exprdirs.shape[2],)
    assert torch.allclose(torch.sigmoid(av.opacity_logit), torch.full((5000,), 0.9))
    assert torch.all(av.rot == torch.tensor([1.0, 0, 0, 0]))
    # Density per area: the face region gets more Gaussians per square metre than the scalp.
    regions = {n: set(i.tolist()) for n, i in open_head.vertex_regions.items()}
    area = face_areas(open_head.v_template, open_head.faces)
    f = open_head.faces
    in_region = lambda name: np.array([all(int(x) in regions[name] for x in tri) for tri in f])  # noqa: E731
    per_face = np.bincount(av.face.numpy(), minlength=len(f))
    dens = {n: per_face[in_region(n)].sum() / area[in_region(n)].sum() for n in ("face", "scalp")}
    assert dens["face"] > 2.0 * dens["scalp"]
    # World means lie on their triangles at the template (local normal coordinate ~ 0).
    assert av.mean[:, 1].abs().max() < 1e-5
    w = deform(av, torch.from_numpy(open_head.v_template))
    assert (w.scales[:, 1] < w.scales[:, 0]).all()


def test_init_avatar_deterministic(open_head: HeadModelData) -> None:
    a, b = init_avatar(open_head, 1000, seed=3), init_avatar(open_head, 1000, seed=3)
    c = init_avatar(open_head, 1000, seed=4)
    for name in ("face", "mean", "rot", "log_scale", "opacity_logit", "sh"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.face, c.face)


def test_init_mean_lies_inside_triangle(open_head: HeadModelData) -> None:
    av = _double(init_avatar(open_head, 500, seed=2))
    v = torch.from_numpy(open_head.v_template).double()
    w = deform(av, v)
    tri = v[torch.from_numpy(open_head.faces)[av.face]]
    # Barycentric coordinates from least squares on the two edges must be within [0, 1].
    e = torch.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], -1)
    uv = torch.linalg.lstsq(e, (w.means - tri[:, 0])[..., None]).solution[..., 0]
    assert (uv >= -1e-4).all() and (uv.sum(-1) <= 1 + 1e-4).all()

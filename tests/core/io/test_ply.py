"""3DGS PLY export/import and the GaussianAvatars importer (savatar.core.io.ply)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from savatar.core.gaussians.binding import deform, init_avatar
from savatar.core.gaussians.gaussians import GaussianAvatar, WorldGaussians
from savatar.core.head.flame import FlameFormatError
from savatar.core.head.head_model import HeadModelData
from savatar.core.head.open_head import load_open_head_data, open_head_model
from savatar.core.io.ply import PlyFormatError, avatar_to_ply, export_ply, import_gaussian_avatars, read_ply_gaussians

INRIA_DEG3 = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
              + [f"f_rest_{i}" for i in range(45)]
              + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


@pytest.fixture(scope="module")
def avatar_deg3() -> GaussianAvatar:
    """2000 Gaussians on the open head with degree-3 SH, random higher bands and random rotations."""
    av = init_avatar(load_open_head_data(), 2000, sh_degree=3)
    g = torch.Generator().manual_seed(1)
    sh = av.sh.clone()
    sh[:, 1:] = torch.randn(len(av), 15, 3, generator=g) * 0.3
    rot = torch.nn.functional.normalize(torch.randn(len(av), 4, generator=g), dim=1)
    return dataclasses.replace(av, sh=sh, rot=rot)


@pytest.fixture(scope="module")
def neutral_verts() -> torch.Tensor:
    with torch.no_grad():
        return open_head_model()().vertices[0]


def test_export_inria_layout_and_round_trip(avatar_deg3: GaussianAvatar, neutral_verts: torch.Tensor,
                                            tmp_path: Path) -> None:
    path = tmp_path / "avatar.ply"
    avatar_to_ply(avatar_deg3, neutral_verts, path)
    with torch.no_grad():
        g = deform(avatar_deg3, neutral_verts)

    ply = PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"
    el = ply["vertex"]
    assert [p.name for p in el.properties] == INRIA_DEG3
    assert all(p.val_dtype in ("f4", "float32") for p in el.properties)
    assert el.count == len(avatar_deg3)
    assert np.all(el["nx"] == 0) and np.all(el["nz"] == 0)
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file of the atomic write is gone

    back = read_ply_gaussians(path)
    assert torch.equal(back.means, g.means)
    assert torch.equal(back.sh, g.sh)
    assert torch.allclose(back.opacities, g.opacities, atol=1e-6)
    assert torch.allclose(back.scales, g.scales, rtol=1e-5)
    dot = (back.quats * g.quats).sum(1).abs()
    assert torch.allclose(dot, torch.ones_like(dot), atol=1e-6)


def test_f_rest_is_channel_major(tmp_path: Path) -> None:
    n, k = 5, 9
    # Every coefficient distinct: value = 100 c + 10 j + row, so a wrong order changes values.
    j = torch.arange(k, dtype=torch.float32)[None, :, None]
    c = torch.arange(3, dtype=torch.float32)[None, None, :]
    row = torch.arange(n, dtype=torch.float32)[:, None, None]
    sh = 100 * c + 10 * j + row
    g = WorldGaussians(means=torch.randn(n, 3), quats=torch.tensor([[2.0, 0, 0, 0]]).repeat(n, 1),
                       scales=torch.full((n, 3), 0.01), opacities=torch.full((n,), 0.5), sh=sh)
    path = tmp_path / "order.ply"
    export_ply(g, path, min_sh_degree=0)
    el = PlyData.read(str(path))["vertex"]
    for ch in range(3):
        assert np.array_equal(el[f"f_dc_{ch}"], sh[:, 0, ch].numpy())
        for coeff in range(1, k):
            assert np.array_equal(el[f"f_rest_{ch * (k - 1) + coeff - 1}"], sh[:, coeff, ch].numpy())
    assert np.allclose(el["rot_0"], 1.0) and np.allclose(el["opacity"], 0.0)
    assert np.allclose(el["scale_1"], np.log(0.01))
    back = read_ply_gaussians(path)
    assert torch.equal(back.sh, sh)


def test_low_degree_sh_is_padded_to_degree_3_for_other_viewers(tmp_path: Path) -> None:
    g = WorldGaussians(means=torch.randn(4, 3), quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1),
                       scales=torch.full((4, 3), 0.01), opacities=torch.full((4,), 0.5), sh=torch.randn(4, 1, 3))
    export_ply(g, tmp_path / "d0.ply")
    names = [p.name for p in PlyData.read(str(tmp_path / "d0.ply"))["vertex"].properties]
    assert sum(n.startswith("f_rest_") for n in names) == 45
    back = read_ply_gaussians(tmp_path / "d0.ply")
    assert torch.equal(back.sh[:, :1], g.sh) and not back.sh[:, 1:].any()


def test_plain_point_cloud_names_missing_property(tmp_path: Path) -> None:
    path = tmp_path / "points.ply"
    pts = np.zeros(4, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(path))
    with pytest.raises(PlyFormatError, match=r"points\.ply.*'f_dc_0'"):
        read_ply_gaussians(path)


def test_truncated_file_raises(avatar_deg3: GaussianAvatar, neutral_verts: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "cut.ply"
    avatar_to_ply(avatar_deg3, neutral_verts, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(PlyFormatError, match=r"cut\.ply"):
        read_ply_gaussians(path)
    path.write_bytes(data[:40])  # inside the header
    with pytest.raises(PlyFormatError, match=r"cut\.ply"):
        read_ply_gaussians(path)


# ---------------------------------------------------------------------------------------------
# GaussianAvatars import on a tiny head whose faces the test controls


def _tiny_head() -> HeadModelData:
    """A skewed tetrahedron-like patch: 5 vertices, 4 faces, 2 shape and 1 expression component."""
    v = np.array([[0, 0, 0], [0.02, 0.001, 0], [0.004, 0.015, 0.003], [0.01, 0.01, 0.02], [-0.01, 0.005, 0.01]],
                 np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3], [1, 2, 3], [0, 2, 4]], np.int64)
    nv = len(v)
    rng = np.random.default_rng(0)
    weights = np.zeros((nv, 5), np.float32)
    weights[:, 0] = 1
    return HeadModelData(
        name="tiny", v_template=v, faces=faces,
        shapedirs=rng.normal(0, 0.002, (nv, 3, 2)).astype(np.float32),
        exprdirs=np.zeros((nv, 3, 1), np.float32), posedirs=np.zeros((nv, 3, 36), np.float32),
        j_regressor=np.full((5, nv), 1.0 / nv, np.float32), parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=weights, lmk_faces=np.zeros(0, np.int64), lmk_bary=np.zeros((0, 3), np.float32))


def _ga_ply(path: Path, binding: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a GaussianAvatars-style point_cloud.ply (degree 1, all float32 incl. binding_0)."""
    n = len(binding)
    rng = np.random.default_rng(seed)
    vals = {"xyz": rng.normal(0, 0.5, (n, 3)), "f_dc": rng.normal(0, 1, (n, 3)),
            "f_rest": rng.normal(0, 0.2, (n, 9)), "opacity": rng.normal(0, 2, n),
            "scale": rng.normal(-1, 0.5, (n, 3)), "rot": rng.normal(0, 1, (n, 4))}
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)] \
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "binding_0"]
    cols = np.concatenate([vals["xyz"], np.zeros((n, 3)), vals["f_dc"], vals["f_rest"], vals["opacity"][:, None],
                           vals["scale"], vals["rot"], binding[:, None].astype(np.float64)], 1)
    rec = np.empty(n, dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        rec[name] = cols[:, i]
    PlyData([PlyElement.describe(rec, "vertex")]).write(str(path))
    return {k: v.astype(np.float32) for k, v in vals.items()}


def _ga_world(verts: torch.Tensor, faces: np.ndarray, vals: dict[str, np.ndarray], binding: np.ndarray,
              legacy: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World means, scales, rotation matrices by GaussianAvatars' published formulas (a2 from
    -(a1 x a0)), written independently of savatar.core.gaussians.binding."""
    v = verts.double()
    f = torch.as_tensor(faces)
    v0, v1, v2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    nrm = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    a0 = nrm(v1 - v0)
    a1 = nrm(torch.cross(a0, v2 - v0, dim=-1))
    a2 = -nrm(torch.cross(a1, a0, dim=-1))
    R = torch.stack([a0, a1, a2], -1)
    k = ((v1 - v0).norm(dim=-1) + (a2 * (v2 - v0)).sum(-1).abs()) / 2
    c = (v0 + v1 + v2) / 3
    b = torch.as_tensor(binding)
    xyz = torch.as_tensor(vals["xyz"], dtype=torch.float64)
    means = (R[b] @ xyz[:, :, None])[..., 0] * k[b, None] + c[b]
    scales = torch.exp(torch.as_tensor(vals["scale"], dtype=torch.float64)) * k[b, None]
    q = nrm(torch.as_tensor(vals["rot"], dtype=torch.float64))
    w, x, y, z = q.unbind(-1)
    r_local = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                           2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                           2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    rot = r_local @ R[b] if legacy else R[b] @ r_local
    return means, scales, rot


def _rotation_of(q: torch.Tensor) -> torch.Tensor:
    from savatar.core.gaussians.binding import quat_to_matrix

    return quat_to_matrix(q.double())


def test_gaussian_avatars_import_maps_fields_and_matches_their_deformation(tmp_path: Path) -> None:
    head = _tiny_head()
    binding = np.array([0, 3, 1, 2, 2, 0, 3, 4, 5])  # 4 and 5: faces the head lacks (their teeth)
    vals = _ga_ply(tmp_path / "point_cloud.ply", binding)
    shape = np.array([[0.7, -1.2, 9.0]], np.float32)  # (1, S) with one coefficient more than the head
    static = np.zeros((1, 7, 3), np.float32)  # 2 extra rows: their teeth vertices
    static[0, :5] = np.random.default_rng(3).normal(0, 1e-3, (5, 3))
    np.savez(tmp_path / "flame_param.npz", shape=shape, static_offset=static, expr=np.zeros((2, 100), np.float32))

    av = import_gaussian_avatars(tmp_path / "point_cloud.ply", head=head)
    keep = binding < 4
    assert av.metadata["import_dropped"] == 2
    assert av.face.dtype == torch.int64 and av.face.tolist() == binding[keep].tolist()
    assert torch.equal(av.mean, torch.from_numpy(vals["xyz"][keep]))
    assert torch.equal(av.log_scale, torch.from_numpy(vals["scale"][keep]))
    assert torch.equal(av.opacity_logit, torch.from_numpy(vals["opacity"][keep]))
    assert torch.allclose(av.rot.norm(dim=1), torch.ones(len(av)))
    assert av.sh.shape == (len(av), 4, 3)
    assert torch.equal(av.sh[:, 0], torch.from_numpy(vals["f_dc"][keep]))
    # f_rest channel-major: (N, 3, 3) [channel, coefficient] -> sh[:, 1:, channel]
    assert torch.equal(av.sh[:, 1:], torch.from_numpy(vals["f_rest"][keep].reshape(-1, 3, 3)).transpose(1, 2))
    assert av.shape.tolist() == pytest.approx([0.7, -1.2])
    assert torch.equal(av.static_offset, torch.from_numpy(static[0, :5]))
    assert av.head_model == "tiny" and av.default_expr.shape == (1,)

    # Our deform on a posed mesh reproduces GaussianAvatars' world Gaussians.
    from savatar.core.head.head_model import HeadModel

    pose = torch.zeros(1, 15)
    pose[0, :3] = torch.tensor([0.3, -0.5, 0.2])
    with torch.no_grad():
        verts = HeadModel(head)(shape=av.shape[None], pose=pose, static_offset=av.static_offset).vertices[0]
        g = deform(av, verts)
    kept = {k: v[keep] for k, v in vals.items()}
    means, scales, rot = _ga_world(verts, head.faces, kept, binding[keep])
    assert torch.allclose(g.means.double(), means, atol=1e-6)
    assert torch.allclose(g.scales.double(), scales, rtol=1e-5)
    assert torch.allclose(_rotation_of(g.quats), rot, atol=1e-5)


def test_gaussian_avatars_legacy_rotation_order_matches_on_identity_mesh(tmp_path: Path) -> None:
    head = _tiny_head()
    binding = np.array([0, 1, 2, 3, 1])
    vals = _ga_ply(tmp_path / "point_cloud.ply", binding, seed=5)
    av = import_gaussian_avatars(tmp_path / "point_cloud.ply", head=head, legacy_rotation_order=True)
    assert av.shape.abs().sum() == 0  # no flame_param.npz: mean identity
    verts = torch.from_numpy(head.v_template)
    g = deform(av, verts)
    _, _, rot = _ga_world(verts, head.faces, vals, binding, legacy=True)
    assert torch.allclose(_rotation_of(g.quats), rot, atol=1e-5)


def test_gaussian_avatars_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    head = _tiny_head()
    g = WorldGaussians(means=torch.zeros(3, 3), quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1),
                       scales=torch.ones(3, 3), opacities=torch.full((3,), 0.5), sh=torch.zeros(3, 1, 3))
    export_ply(g, tmp_path / "plain.ply")
    with pytest.raises(PlyFormatError, match="binding_0"):
        import_gaussian_avatars(tmp_path / "plain.ply", head=head)

    _ga_ply(tmp_path / "point_cloud.ply", np.array([0, 1]))
    monkeypatch.delenv("SAVATAR_FLAME_DIR", raising=False)
    with pytest.raises(FlameFormatError, match="needs the FLAME model"):
        import_gaussian_avatars(tmp_path / "point_cloud.ply")
    with pytest.raises(PlyFormatError, match="missing.npz"):
        import_gaussian_avatars(tmp_path / "point_cloud.ply", tmp_path / "missing.npz", head=head)
    np.savez(tmp_path / "bad.npz", expr=np.zeros(3))
    with pytest.raises(PlyFormatError, match="'shape'"):
        import_gaussian_avatars(tmp_path / "point_cloud.ply", tmp_path / "bad.npz", head=head)

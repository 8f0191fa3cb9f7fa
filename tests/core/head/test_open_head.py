"""The open head model: LBS identities, argument checking, and realism judged by MediaPipe."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from savatar.core.head.head_model import HeadModel, JOINT_NAMES
from savatar.core.head.open_head import load_open_head_data
from savatar.core.render.camera import orbit_camera


@pytest.fixture(scope="module")
def data():
    return load_open_head_data()


@pytest.fixture(scope="module")
def model(data):
    return HeadModel(data)


def pose_with(joint: str, rot) -> torch.Tensor:
    pose = torch.zeros(1, 15)
    j = JOINT_NAMES.index(joint)
    pose[0, 3 * j:3 * j + 3] = torch.as_tensor(rot, dtype=torch.float32)
    return pose


def test_structure_matches_flame_layout(data):
    assert 4000 <= len(data.v_template) <= 6500 and 8000 <= len(data.faces) <= 13000
    assert data.shapedirs.shape[2] >= 20
    assert len(data.lmk_faces) == 478
    assert np.allclose(data.lbs_weights.sum(1), 1, atol=1e-5) and data.lbs_weights.min() >= 0
    names = set(data.expr_names)
    for n in ["eyeBlink_L", "eyeBlink_R", "eyeSquint_L", "eyeWide_R", "browInnerUp", "browOuterUp_L", "browDown_R",
              "mouthSmile_L", "mouthFrown_R", "mouthPucker", "mouthFunnel", "mouthStretch_L", "mouthPress_R",
              "mouthUpperUp_L", "mouthLowerDown_R", "cheekPuff", "noseSneer_L"]:
        assert n in names
    # Closed surface for the head: every edge of the skin, socket and cavity parts borders two triangles.
    f = data.faces
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert (counts == 2).all()


def test_the_cranium_does_not_fold_over_itself(data):
    """Every triangle of the skull above the neck faces outwards from the head's middle (a fold
    puts a strip of triangles facing inwards over the outer layer, seen as a swirl from behind)."""
    v, f = np.asarray(data.v_template, np.float64), np.asarray(data.faces)
    normal = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    centroid = v[f].mean(1)
    outward = centroid - np.array([0.0, -0.02, -0.07])  # the centre the cranium was swept around
    scalp = np.zeros(len(v), bool)
    scalp[np.asarray(data.vertex_regions["scalp"])] = True
    skull = scalp[f].all(1) & (centroid[:, 1] > -0.06)
    assert skull.sum() > 1000
    cos = (normal * outward).sum(1) / np.linalg.norm(normal, axis=1) / np.linalg.norm(outward, axis=1)
    assert (cos[skull] > 0.2).all(), f"{int((cos[skull] <= 0.2).sum())} skull triangles face inwards or edge-on"


def test_zero_parameters_give_template(model, data):
    out = model()
    assert torch.allclose(out.vertices[0], torch.from_numpy(data.v_template), atol=1e-6)


def test_root_rotation_is_rigid(model):
    rest_out = model()
    rest, root = rest_out.vertices[0], rest_out.joints[0, 0]
    aa = torch.tensor([0.3, -0.5, 0.2])
    posed = model(pose=pose_with("root", aa)).vertices[0]
    # Independent Rodrigues rotation about the root joint.
    theta = aa.norm()
    k = aa / theta
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = torch.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx
    expected = (rest - root) @ rot.T + root
    assert torch.allclose(posed, expected, atol=1e-5)
    assert (posed - rest).norm(dim=1).mean() > 0.01


def test_jaw_moves_only_jaw_weighted_vertices(model, data):
    rest = model().vertices[0]
    posed = model(pose=pose_with("jaw", [0.3, 0, 0])).vertices[0]
    moved = (posed - rest).norm(dim=1) > 1e-6
    jaw_w = torch.from_numpy(data.lbs_weights[:, 2]) > 0
    assert moved.any()
    assert not (moved & ~jaw_w).any()
    lower = data.vertex_regions["lower_teeth"]
    upper = data.vertex_regions["upper_teeth"]
    assert (posed[lower] - rest[lower]).norm(dim=1).min() > 1e-3  # lower teeth follow the jaw
    assert (posed[upper] - rest[upper]).norm(dim=1).max() < 1e-7


def test_eyeballs_rotate_about_their_centres(model, data):
    left = data.vertex_regions["left_eyeball"]
    rest = model().vertices[0][left]
    posed = model(pose=pose_with("left_eye", [0, 0.4, 0])).vertices[0][left]
    assert torch.allclose(rest.mean(0), posed.mean(0), atol=1e-6)
    assert (posed - rest).norm(dim=1).max() > 1e-3


def test_gradients_reach_every_parameter(model):
    params = {
        "shape": torch.zeros(1, model.num_shape, requires_grad=True),
        "expr": torch.zeros(1, model.num_expr, requires_grad=True),
        "pose": (0.05 * torch.ones(1, 15)).requires_grad_(),
        "translation": torch.zeros(1, 3, requires_grad=True),
        "static_offset": torch.zeros(model.num_vertices, 3, requires_grad=True),
    }
    out = model(**params)
    (out.vertices.square().sum() + out.landmarks.square().sum()).backward()
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert (params["pose"].grad.reshape(5, 3).abs().sum(1) > 0).all()  # every joint


def test_batched_forward_matches_single(model):
    g = torch.Generator().manual_seed(1)
    expr = torch.randn(4, model.num_expr, generator=g) * 0.5
    pose = torch.randn(4, 15, generator=g) * 0.1
    batch = model(expr=expr, pose=pose).vertices
    for i in range(4):
        single = model(expr=expr[i:i + 1], pose=pose[i:i + 1]).vertices
        assert torch.allclose(batch[i], single[0], atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"expr": torch.zeros(1, 999)}, "expr"),
    ({"pose": torch.zeros(1, 14)}, "pose"),
    ({"pose": torch.zeros(2, 3, 5)}, "pose"),
    ({"shape": torch.full((1, 3), float("nan"))}, "NaN"),
    ({"translation": torch.tensor([[0.0, float("inf"), 0.0]])}, "NaN"),
    ({"static_offset": torch.zeros(10, 3)}, "static_offset"),
])
def test_bad_parameters_raise_value_error(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model(**kwargs)


# ---------------------------------------------------------------- realism, judged by MediaPipe
W = H = 512


@pytest.fixture(scope="module")
def renderer(data):
    from savatar.gl.mesh_renderer import MeshRenderer
    return MeshRenderer(data.faces, data.vertex_colors)


@pytest.fixture(scope="module")
def landmarker():
    from savatar.core.drive.face_landmarks import FaceLandmarker
    with FaceLandmarker() as lm:
        yield lm


def render(model, renderer, yaw=0.0, expr=None, pose=None):
    out = model(expr=expr, pose=pose)
    verts = out.vertices[0].detach().numpy()
    cam = orbit_camera(yaw, 0.0, distance=0.55, target=(0.0, -0.02, 0.0), width=W, height=H, fov_y_deg=30)
    img = renderer.render(verts, cam)
    lm = out.landmarks[0].detach().numpy()
    cam_pts = lm @ cam.viewmat[:3, :3].T + cam.viewmat[:3, 3]
    proj = cam_pts @ cam.K.T
    return img, proj[:, :2] / proj[:, 2:]


def expr_vec(data, **values):
    e = torch.zeros(1, len(data.expr_names))
    for k, v in values.items():
        e[0, data.expr_names.index(k)] = v
    return e


def test_mediapipe_sees_the_neutral_template_where_the_embedding_says(model, renderer, landmarker):
    img, proj = render(model, renderer)
    det = landmarker(img)
    assert det is not None, "MediaPipe found no face in the neutral render"
    diag = math.hypot(*np.ptp(det[:, :2], axis=0))
    err = np.linalg.norm(det[:, :2] - proj, axis=1)
    assert err.mean() / diag < 0.03, f"mean landmark error {err.mean() / diag:.2%} of the face diagonal"


@pytest.mark.parametrize("yaw", [-45.0, 45.0])
def test_mediapipe_sees_a_face_at_45_degrees(model, renderer, landmarker, yaw):
    img, _ = render(model, renderer, yaw=yaw)
    assert landmarker(img) is not None


def mouth_opening(lm):
    return np.linalg.norm(lm[13, :2] - lm[14, :2])


def eye_aperture(lm):
    return 0.5 * (np.linalg.norm(lm[159, :2] - lm[145, :2]) + np.linalg.norm(lm[386, :2] - lm[374, :2]))


def corner_lift(lm):
    """Mouth-corner height above the lip centre, in pixels (image y points down)."""
    centre = 0.5 * (lm[13, 1] + lm[14, 1])
    return centre - 0.5 * (lm[61, 1] + lm[291, 1])


def test_expressions_move_mediapipe_measurements_the_right_way(model, data, renderer, landmarker):
    neutral = landmarker(render(model, renderer)[0])
    jaw_open = landmarker(render(model, renderer, pose=pose_with("jaw", [0.3, 0, 0]))[0])
    closed = landmarker(render(model, renderer, expr=expr_vec(data, eyeBlink_L=1, eyeBlink_R=1))[0])
    smile = landmarker(render(model, renderer, expr=expr_vec(data, mouthSmile_L=1, mouthSmile_R=1))[0])
    assert all(x is not None for x in (neutral, jaw_open, closed, smile))
    assert mouth_opening(jaw_open) > mouth_opening(neutral) + 10
    assert eye_aperture(closed) < 0.6 * eye_aperture(neutral)
    assert corner_lift(smile) > corner_lift(neutral) + 2

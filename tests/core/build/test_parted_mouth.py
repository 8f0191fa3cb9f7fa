"""Portraits with parted lips (savatar.core.build.parted_mouth): the Gaussians that carry the
portrait's teeth move to the teeth, so an opened mouth shows them at their own size over a dark
cavity while the source view stays; rebinding keeps a Gaussian where it is; the discs facing the
camera cover what the Gaussians covered."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from savatar.core.build.build import build_avatar, lips_closed
from savatar.core.build.parted_mouth import facing_discs, jaw_share
from savatar.core.drive.face_landmarks import FaceLandmarker
from savatar.core.drive.tracking import TRACKING_VIEWMAT
from savatar.core.gaussians.binding import deform, quat_to_matrix, rebind
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.gaussians.rig import Rig
from savatar.core.head.head_model import HeadModel
from savatar.core.head.open_head import load_open_head_data
from savatar.core.io.pixels import to_uint8
from savatar.core.render.camera import Camera, orbit_camera

OUT = Path("/tmp/savatar_build_test")
PORTRAIT_JAW = 0.15  # radians: lips parted as in a smile showing the teeth
WIDE_JAW = 0.4
TEETH = np.array([0.80, 0.88, 0.98])  # bluish: no colour of the head model's own mouth
MOUTH = np.array([0.12, 0.04, 0.04])
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)  # MediaPipe Face Mesh, corner to corner
LOWER_INNER_LIP = (308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78)


def _render(avatar: GaussianAvatar, camera: Camera, expr=None, pose=None, translation=None) -> np.ndarray:
    """(H, W, 3) in [0, 1] on white, the CPU renderer."""
    from savatar.core.render.api import render

    world = Rig.of(avatar).world(expr, pose, translation)
    with torch.no_grad():
        out = render(world, torch.tensor(camera.viewmat, dtype=torch.float32), torch.tensor(camera.K, dtype=torch.float32),
                     camera.width, camera.height, torch.ones(3), backend="cpu")
    return out.rgb.numpy()


@pytest.fixture(scope="module")
def parted():
    """(portrait (512, 512, 3) uint8, its MediaPipe landmarks (478, 3), avatar built from it, its
    SourceResult): the bundled avatar seen from the front with its jaw a little open, the opening
    between its inner lips painted as a smile shows it, the upper teeth over a dark mouth."""
    from savatar.core.build.default_avatar import default_avatar

    bundled = default_avatar(30000)
    pose = np.zeros(15, np.float32)
    pose[6] = PORTRAIT_JAW
    centre = tuple(Rig.of(bundled).vertices().numpy().mean(0))
    image = _render(bundled, orbit_camera(0, 0, 0.45, centre, 512, 512, 30.0), pose=pose)
    with FaceLandmarker() as landmarker:
        pts = landmarker(image)
    assert pts is not None
    opening = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(pts[list(UPPER_INNER_LIP + LOWER_INNER_LIP), :2]).astype(np.int32)], 1)
    for x in np.flatnonzero(opening.any(0)):
        ys = np.flatnonzero(opening[:, x])
        teeth = ys < ys.min() + 0.5 * (ys.max() - ys.min())
        image[ys[teeth], x] = TEETH
        image[ys[~teeth], x] = MOUTH
    portrait = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    avatar, results = build_avatar([portrait], count=30000)
    return portrait, pts, avatar, results[0]


def _projected(avatar: GaussianAvatar, camera: Camera, expr, pose, translation) -> np.ndarray:
    """Pixel positions (N, 2) of the avatar's Gaussians through camera."""
    means = Rig.of(avatar).world(expr, pose, translation).means.double().numpy()
    cam = means @ camera.viewmat[:3, :3].T + camera.viewmat[:3, 3]
    return cam[:, :2] / cam[:, 2:] * np.diag(camera.K)[:2] + camera.K[:2, 2]


def test_opened_wider_the_portraits_teeth_keep_their_size_over_a_dark_cavity(parted):
    """Opened wider than in the portrait, the mouth shows the portrait's teeth as tall as it showed
    them, over a dark cavity, not drawn out down the opening (on the lip curtain, the Gaussians
    carrying them spread as far as the opening grew: streaks); the source view keeps them."""
    portrait, pts, avatar, src = parted
    assert not lips_closed(src.landmarks)
    h, w = src.image.shape[:2]
    camera = Camera(TRACKING_VIEWMAT, src.K, w, h)
    wide_pose = src.pose.copy()
    wide_pose[6] = WIDE_JAW
    colour = (avatar.sh[:, 0].numpy() * 0.28209479177387814 + 0.5).clip(0, 1)
    at_source = _projected(avatar, camera, src.expr, src.pose, src.translation)
    x0, x1 = sorted(pts[[61, 291], 0])
    y0, y1 = pts[[0, 17], 1]
    in_mouth = (at_source[:, 0] > x0) & (at_source[:, 0] < x1) & (at_source[:, 1] > y0) & (at_source[:, 1] < y1)
    teeth = in_mouth & (colour.min(1) > 0.6) & (colour[:, 2] > colour[:, 0] + 0.05)  # the portrait's teeth
    assert teeth.sum() > 12  # enough to measure their spread (19: the curtain pinned to the teeth)
    opened = _projected(avatar, camera, src.expr, wide_pose, src.translation)
    spread = lambda y: float(np.percentile(y, 95) - np.percentile(y, 5))  # noqa: E731
    lips_apart = lambda uv: float(np.linalg.norm(uv[17] - uv[0]))  # noqa: E731
    lm_src, lm_wide = (_projected_landmarks(avatar, camera, src.expr, p, src.translation) for p in (src.pose, wide_pose))
    print(f"teeth Gaussians {teeth.sum()}: height {spread(at_source[teeth, 1]):.1f} px in the portrait's pose, "
          f"{spread(opened[teeth, 1]):.1f} px opened; lips apart {lips_apart(lm_src):.1f} -> {lips_apart(lm_wide):.1f} px")
    assert lips_apart(lm_wide) > 1.3 * lips_apart(lm_src)
    assert spread(opened[teeth, 1]) < 1.25 * spread(at_source[teeth, 1])

    source = _render(avatar, camera, src.expr, src.pose, src.translation)
    wide = _render(avatar, camera, src.expr, wide_pose, src.translation)
    OUT.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(OUT / "parted_mouth.png"), cv2.cvtColor(to_uint8(np.concatenate([portrait / 255.0, source, wide], 1)),
                                                            cv2.COLOR_RGB2BGR))
    # Rendered, in the middle third of the mouth's width: rows whose median has the teeth's tint
    # (bluer than red, if only a little once blurred; skin and mouth are redder) and dark rows
    # (every channel under 0.3).
    strip = lambda rgb: rgb[int(y0):int(pts[152, 1]), int(x0 + (x1 - x0) / 3):int(x1 - (x1 - x0) / 3)]  # noqa: E731
    tinted = lambda rgb: int((np.median(strip(rgb)[..., 2] - strip(rgb)[..., 0], 1) > 0.0).sum())  # noqa: E731
    dark = lambda rgb: int((np.median(strip(rgb).max(2), 1) < 0.3).sum())  # noqa: E731
    print(f"teeth rows: portrait {tinted(portrait / 255.0)}, source view {tinted(source)}, opened {tinted(wide)}; "
          f"dark rows: portrait {dark(portrait / 255.0)}, source view {dark(source)}, opened {dark(wide)}")
    assert tinted(source) >= 0.5 * tinted(portrait / 255.0)  # the source view shows the portrait's teeth
    assert tinted(wide) <= 1.3 * tinted(source)  # opened, no taller
    assert dark(wide) >= dark(source) + 10  # over a dark cavity


def test_at_rest_the_lips_close_over_the_portraits_teeth(parted):
    """At rest the lips meet: the portrait's teeth, moved behind the lips, do not show between
    them (the curtain's front, which closed the mouth at rest, carries them), and what closes the
    mouth parts with the lips as the jaw opens: opened, the teeth show again."""
    portrait, pts, avatar, src = parted
    h, w = src.image.shape[:2]
    camera = Camera(TRACKING_VIEWMAT, src.K, w, h)
    rest_pose = src.pose.copy()
    rest_pose[6:9] = 0.0
    wide_pose = src.pose.copy()
    wide_pose[6] = WIDE_JAW
    expr = np.zeros_like(src.expr)

    def teeth_tint(pose) -> float:
        """How much bluer than red (the teeth's tint; lips and skin are redder) the bluest row is
        than the typical row, between the upper lip's top and the lower lip's bottom in the
        middle third of the mouth's width (row medians)."""
        lm = _projected_landmarks(avatar, camera, expr, pose, src.translation)
        x0, x1 = sorted(lm[[61, 291], 0])
        rgb = _render(avatar, camera, expr, pose, src.translation)
        strip = rgb[int(lm[0, 1]):int(np.ceil(lm[17, 1])), int(x0 + (x1 - x0) / 3):int(x1 - (x1 - x0) / 3)]
        rows = np.median(strip[..., 2] - strip[..., 0], 1)
        return float(rows.max() - np.median(rows))

    rest, opened = teeth_tint(rest_pose), teeth_tint(wide_pose)
    print(f"teeth's tint between the lips: at rest {rest:.2f}, opened {opened:.2f}")
    assert rest < 0.1  # 0.23 with the curtain's front carrying the teeth: a band between the lips
    assert opened > 0.08  # opened, the teeth show again


def _projected_landmarks(avatar: GaussianAvatar, camera: Camera, expr, pose, translation) -> np.ndarray:
    """The head model's MediaPipe landmarks (L, 2) through camera, indexed by MediaPipe's numbers."""
    rig = Rig.of(avatar)
    verts = rig.vertices(expr, pose, translation).numpy().astype(np.float64)
    lm = (verts[np.asarray(rig.data.faces)[rig.data.lmk_faces]] * rig.data.lmk_bary[:, :, None]).sum(1)
    cam = lm @ camera.viewmat[:3, :3].T + camera.viewmat[:3, 3]
    uv = cam[:, :2] / cam[:, 2:] * np.diag(camera.K)[:2] + camera.K[:2, 2]
    out = np.full((478, 2), np.nan)
    out[np.asarray(rig.data.lmk_mediapipe, np.int64)] = uv
    return out


def test_jaw_share_interpolates_the_corners_weights():
    tri = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]] * 4)
    weight = np.array([[0.0, 1.0, 1.0]] * 4)
    points = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 0.002], [-1.0, -1.0, 0.0]])
    np.testing.assert_allclose(jaw_share(points, tri, weight), [0.0, 1.0, 2 / 3, 0.0], atol=1e-9)


def test_rebind_keeps_the_gaussians_in_the_pose_and_follows_the_new_faces():
    from savatar.core.build.default_avatar import default_avatar

    data = load_open_head_data()
    model = HeadModel(data)
    avatar = default_avatar(3000)
    avatar = GaussianAvatar(**{k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in vars(avatar).items()})
    pose = torch.zeros(1, 15)
    pose[0, 6] = 0.1
    wide = pose.clone()
    wide[0, 6] = 0.3
    with torch.no_grad():
        verts, verts_wide = model(pose=pose).vertices[0], model(pose=wide).vertices[0]
    before = deform(avatar, verts, model.faces)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(avatar), 200, replace=False)
    lower = np.flatnonzero(np.isin(data.faces[:, 0], data.vertex_regions["lower_teeth"]))
    target = rng.choice(lower, 200)
    rebind(avatar, idx, target, verts, model.faces)
    after = deform(avatar, verts, model.faces)
    torch.testing.assert_close(after.means, before.means, atol=1e-6, rtol=0)
    torch.testing.assert_close(after.scales, before.scales, atol=1e-7, rtol=1e-5)
    same = torch.minimum((after.quats - before.quats).abs().amax(1), (after.quats + before.quats).abs().amax(1))
    assert float(same.max()) < 1e-5
    # The lower teeth turn with the jaw as one rigid body: rebound Gaussians keep their distances
    # to each other when it opens further (on the lip curtain they would have spread apart).
    moved = deform(avatar, verts_wide, model.faces).means[idx].double()
    torch.testing.assert_close(torch.cdist(moved, moved), torch.cdist(after.means[idx].double(), after.means[idx].double()),
                               atol=2e-4, rtol=0)


def test_facing_discs_cover_what_the_gaussians_covered():
    # Through a pinhole camera at the origin looking down -z, the projected 2-D covariance
    # (the splatting Jacobian's, computed here independently) of each disc is the Gaussian's.
    rng = np.random.default_rng(1)
    means = torch.as_tensor(np.c_[rng.uniform(-0.05, 0.05, (50, 2)), rng.uniform(-0.7, -0.4, 50)])
    quats = torch.nn.functional.normalize(torch.as_tensor(rng.normal(size=(50, 4))), dim=1)
    scales = torch.as_tensor(rng.uniform(0.0005, 0.006, (50, 3)))
    q, s = facing_discs(means, quats, scales, torch.zeros(3))

    def projected(q: torch.Tensor, s: torch.Tensor) -> np.ndarray:
        R = quat_to_matrix(q).numpy()
        cov = R @ np.apply_along_axis(np.diag, 1, s.numpy() ** 2) @ R.transpose(0, 2, 1)
        x, y, z = means.numpy().T
        J = np.zeros((50, 2, 3))
        J[:, 0, 0] = J[:, 1, 1] = 1 / z
        J[:, 0, 2], J[:, 1, 2] = -x / z ** 2, -y / z ** 2
        return J @ cov @ J.transpose(0, 2, 1)

    np.testing.assert_allclose(projected(q, s), projected(quats, scales), rtol=1e-6, atol=1e-14)
    sight = torch.nn.functional.normalize(means, dim=1)
    normal = quat_to_matrix(q)[:, :, 2]
    np.testing.assert_allclose(np.abs((normal * sight).sum(1).numpy()), 1.0, atol=1e-9)  # facing the camera
    assert torch.all(s[:, 2] < s[:, :2].min(1).values)  # thin along the line of sight

"""Building an avatar from portraits (savatar.core.build.build) on scikit-image's astronaut:
quality at the source camera, faces found in novel views, order independence, bad inputs, and
held-out views of sources rendered from a known avatar."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from savatar.core.reenact.head_mask import head_mask
from savatar.core.build.build import BuildError, SourceResult, build_avatar, fill_unseen, rasterize_depth
from savatar.core.drive.face_landmarks import FaceLandmarker
from savatar.core.drive.tracking import TRACKING_VIEWMAT
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.gaussians.rig import Rig
from savatar.core.render.camera import Camera, orbit_camera

OUT = Path("/tmp/savatar_build_test")


def render(avatar: GaussianAvatar, camera: Camera, expr=None, pose=None, translation=None,
           background=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3), alpha (H, W)) with the GL splatter, or the CPU renderer without GL."""
    world = Rig.of(avatar).world(expr, pose, translation)
    try:
        from savatar.gl.splat_renderer import SplatRenderer
        out = SplatRenderer().render(world, camera, background)
        return out.rgb, out.alpha[..., 0]
    except Exception:  # no EGL/GL on this machine: the reference renderer gives the same image
        from savatar.core.render.api import render as cpu_render
        with torch.no_grad():
            out = cpu_render(world, torch.tensor(camera.viewmat, dtype=torch.float32),
                             torch.tensor(camera.K, dtype=torch.float32), camera.width, camera.height,
                             torch.tensor(background, dtype=torch.float32))
        return out.rgb.numpy(), out.alpha.numpy().reshape(camera.height, camera.width)


def source_camera(src: SourceResult) -> Camera:
    h, w = src.image.shape[:2]
    return Camera(TRACKING_VIEWMAT, src.K, w, h)


def masked_scores(ref: np.ndarray, img: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """PSNR and mean SSIM over mask (H, W) bool (SSIM map computed on the mask's bounding box)."""
    psnr = peak_signal_noise_ratio(ref[mask], img[mask], data_range=1.0)
    ys, xs = np.nonzero(mask)
    box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    _, full = structural_similarity(ref[box], img[box], channel_axis=2, data_range=1.0, full=True)
    return float(psnr), float(full.mean(2)[mask[box]].mean())


def save_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def built(astronaut):
    return build_avatar([astronaut], count=15000)


def test_source_view_psnr_ssim(built):
    avatar, results = built
    (src,) = results
    assert src.ok and src.residual_px < 3.0
    rgb, alpha = render(avatar, source_camera(src), src.expr, src.pose, src.translation)
    # The scoring protocol's head mask (person segmentation cut below the chin) where the avatar
    # covers the image.
    mask = head_mask(src.mask, src.landmarks) & (alpha > 0.95)
    assert mask.sum() > 8000
    psnr, ssim = masked_scores(src.image, rgb, mask)
    print(f"source view: PSNR {psnr:.2f} dB, SSIM {ssim:.3f} over {mask.sum()} px")
    save_png(OUT / "source_view.png", np.concatenate([rgb, src.image * mask[..., None]], 1))
    # Measured 19.0 dB / 0.48 at 15K Gaussians (the hair volume reaches the collar, which counts
    # and is blurred): colours are point samples on flat discs of about 2 px, so fine texture
    # (eyelashes, hair strands) is blurred; 17.5 dB / 0.42 leaves room for the GL/CPU
    # difference while still failing on a misplaced fit (which drops below 15 dB).
    assert psnr > 17.5
    assert ssim > 0.42
    assert avatar.metadata["thumbnails"].shape == (1, 128, 128, 3)
    assert torch.all(avatar.default_expr == 0)


def test_novel_views_have_a_face(built):
    avatar, _ = built
    rig = Rig.of(avatar)
    verts = rig.vertices().numpy()
    target = np.array([0.0, verts[:, 1].min() + 0.6 * np.ptp(verts[:, 1]), verts[:, 2].mean()])
    views = []
    with FaceLandmarker() as landmarker:
        for yaw in (0, 30, -30):
            rgb, _ = render(avatar, orbit_camera(yaw, 0, 0.75, target, 512, 512, 30), background=(1.0, 1.0, 1.0))
            save_png(OUT / f"yaw_{yaw:+d}.png", rgb)
            views.append(rgb)
            assert landmarker(rgb) is not None, f"no face found at yaw {yaw}"
    save_png(OUT / "yaws.png", np.concatenate(views, 1))


def test_order_independent(astronaut):
    a = astronaut
    b = np.ascontiguousarray(np.clip(astronaut[:, ::-1].astype(np.int16) + 20, 0, 255).astype(np.uint8))
    av1, r1 = build_avatar([a, b], count=3000)
    av2, r2 = build_avatar([b, a], count=3000)
    assert all(r.ok for r in r1 + r2)
    np.testing.assert_allclose(av1.shape.numpy(), av2.shape.numpy(), atol=1e-5)
    np.testing.assert_allclose(av1.sh.numpy(), av2.sh.numpy(), atol=1e-4)
    assert torch.equal(av1.face, av2.face)


def write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_bad_inputs_reported_build_goes_on(astronaut, tmp_path):
    good = write(tmp_path / "good.png", astronaut)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n")
    full = write(tmp_path / "full.jpg", astronaut).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full[:len(full) // 2])
    blank = write(tmp_path / "blank.png", np.full((512, 512, 3), 200, np.uint8))
    canvas = np.full((512, 512, 3), 128, np.uint8)
    canvas[224:288, 224:288] = cv2.resize(astronaut, (64, 64), interpolation=cv2.INTER_AREA)
    tiny = write(tmp_path / "tiny.png", canvas)
    # MediaPipe misses the 64 px astronaut altogether; alone at 300 px it finds a 62 px face.
    small = write(tmp_path / "small.png", cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA))
    blurred = write(tmp_path / "blurred.png", cv2.GaussianBlur(astronaut, (0, 0), 4.0))
    huge = write(tmp_path / "huge.jpg", cv2.resize(astronaut, (4000, 4000), interpolation=cv2.INTER_LINEAR))
    paths = [text, good, truncated, blank, tiny, small, blurred, huge]
    avatar, results = build_avatar(paths, count=2000)
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == [p.name for p in paths]
    for r in results:
        print(r.line())
    assert by_name["good.png"].ok
    assert "not an image" in by_name["notes.jpg"].reason
    assert "truncated" in by_name["truncated.jpg"].reason
    assert by_name["blank.png"].reason == "no face found"
    assert by_name["tiny.png"].reason.startswith(("no face found", "face too small"))
    assert by_name["small.png"].reason.startswith("face too small")
    assert "blurred" in by_name["blurred.png"].reason
    huge_r = by_name["huge.jpg"]
    assert huge_r.ok and "downscaled from 4000x4000" in huge_r.line()
    assert max(huge_r.image.shape[:2]) <= 1024
    assert avatar.metadata["thumbnails"].shape[0] == 2
    with pytest.raises(BuildError, match="notes.jpg.*not an image"):
        build_avatar([text, blank, truncated], count=100)


def test_several_faces_take_largest(astronaut):
    face = astronaut[20:260, 130:330]  # the head, (240, 200)
    canvas = np.full((512, 512, 3), 90, np.uint8)
    canvas[20:260, 20:220] = face
    small = cv2.resize(face, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    canvas[260:260 + small.shape[0], 300:300 + small.shape[1]] = small
    _, (r,) = build_avatar([canvas], count=500)
    assert r.ok
    assert "2 faces found, took the largest" in r.line()
    assert r.landmarks[:, 0].max() < 260  # the full-size face on the left


def test_rasterize_depth_is_nearest_surface():
    # Two screen-filling quads at depths 2 and 1: the z-buffer holds 1 wherever both cover.
    quad = lambda z: np.array([[0, 0, z], [64, 0, z], [64, 64, z], [0, 64, z]], float)  # noqa: E731
    verts = np.concatenate([quad(2.0), quad(1.0)])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    z = rasterize_depth(verts, faces, 64, 64)
    assert np.all(z == 1.0)


def test_fill_mirror_and_propagation():
    # A line of Gaussians along x: the left half seen red, the right half unseen; mirror copies.
    x = np.linspace(-0.05, 0.05, 101)
    pos = np.stack([x, np.zeros_like(x), np.zeros_like(x)], 1)
    colour = np.zeros((101, 3))
    seen = x < -0.001
    colour[seen] = [1.0, 0.0, 0.0]
    colour[seen & (x < -0.03)] = [0.0, 0.0, 1.0]
    out = fill_unseen(pos, colour, seen, np.zeros(101, bool), np.full((101, 3), 0.5))
    np.testing.assert_allclose(out[x > 0.035], [[0.0, 0.0, 1.0]] * int((x > 0.035).sum()), atol=1e-6)
    np.testing.assert_allclose(out[(x > 0.005) & (x < 0.025)], [[1.0, 0.0, 0.0]] * int(((x > 0.005) & (x < 0.025)).sum()), atol=1e-6)


def test_fill_keeps_a_narrow_unseen_band_in_its_own_sides_colours():
    # A nose's far wall: a 6 mm unseen band on the right (blue) side whose mirror image lies in
    # the seen left (red) side. Mirrored, it drew the other side's shading as an outline; it takes
    # its neighbours' blue. Far from anything seen (test_fill_mirror_and_propagation) mirroring stays.
    rng = np.random.default_rng(4)
    pos = np.zeros((8000, 3))
    pos[:, :2] = rng.uniform(-0.05, 0.05, (8000, 2))
    x = pos[:, 0]
    band = (x > 0.02) & (x < 0.026)
    colour = np.where((x < 0)[:, None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    out = fill_unseen(pos, colour, ~band, np.zeros(8000, bool), np.full((8000, 3), 0.5))
    # (Its colour settles a little towards the median of all seen ones, a few millimetres out.)
    assert np.all(out[band, 2] > 0.7) and np.all(out[band, 0] < 0.3)


def test_cheeks_never_take_what_lies_beside_the_face(astronaut):
    """A green band painted all around the portrait's face oval (hair, a collar or a background
    beside the face, and the contour's own shading just inside it): the sides of the face stay skin, filled from the face, instead of turning
    green when the head turns; above the eyes the head still takes what the portrait shows."""
    from savatar.core.build.build import cheek_sides
    from savatar.core.drive.tracking import FACE_OVAL
    from savatar.core.gaussians.binding import deform
    from savatar.core.head.head_model import HeadModel

    with FaceLandmarker(static_images=True) as landmarker:
        pts = landmarker(astronaut)
    ring = np.round(pts[FACE_OVAL, :2]).astype(np.int32)
    inside = np.zeros(astronaut.shape[:2], np.uint8)
    cv2.fillPoly(inside, [ring], 1)
    width = np.ptp(ring[:, 0])
    # From just inside the contour (its shading) outwards.
    band = cv2.dilate(inside, np.ones((int(0.3 * width),) * 2, np.uint8)) > cv2.erode(inside, np.ones((int(0.02 * width),) * 2, np.uint8))
    image = astronaut.copy()
    image[band] = (0, 255, 0)
    avatar, _ = build_avatar([image], count=15000, sharpen=False)
    rig = Rig.of(avatar)
    model = HeadModel(rig.data)
    with torch.no_grad():
        neutral = model(shape=avatar.shape[None], static_offset=avatar.static_offset).vertices[0]
        positions = deform(avatar, neutral, model.faces).means.double().numpy()
    labels, names = rig.data.face_regions()
    cheeks = cheek_sides(positions, labels[avatar.face.numpy()], names, neutral.double().numpy(), rig.data)
    rgb = avatar.sh[:, 0].numpy() * 0.28209479177387814 + 0.5
    green = (rgb[:, 1] > rgb[:, 0] + 0.2) & (rgb[:, 1] > rgb[:, 2] + 0.2)
    assert cheeks.sum() > 500
    assert green[cheeks].mean() < 0.01, f"{green[cheeks].sum()} of {cheeks.sum()} cheek Gaussians took the band"
    assert green[~cheeks].sum() > 100  # the band is there to be taken, beside the temples and neck


def _fit_view(avatar: GaussianAvatar, image: np.ndarray):
    """Fitted (expr, pose, translation, K) of the avatar's identity to a rendered view."""
    from savatar.core.drive.tracking import FaceFitter, TrackerParams, intrinsics_for

    rig = Rig.of(avatar)
    with FaceLandmarker() as landmarker:
        pts = landmarker(image)
    assert pts is not None
    k = intrinsics_for(image.shape[1], image.shape[0])
    fit = FaceFitter(rig.data, k, avatar.shape.numpy().astype(np.float64),
                     TrackerParams(filter=False)).fit(pts, iterations=40)
    return fit.expr, fit.pose, fit.translation, k


def test_held_out_view_improves_with_sources(built):
    """Sources rendered from a known avatar (the astronaut build) at several views; the held-out
    view (yaw 20, pitch 10) is compared inside the known avatar's silhouette after fitting the
    built avatar's pose to it, as for a real photo."""
    known, _ = built
    verts = Rig.of(known).vertices().numpy()
    target = np.array([0.0, verts[:, 1].min() + 0.6 * np.ptp(verts[:, 1]), verts[:, 2].mean()])
    cam = lambda yaw, pitch: orbit_camera(yaw, pitch, 0.75, target, 512, 512, 30)  # noqa: E731
    bg = (0.5, 0.5, 0.5)
    views = {v: render(known, cam(*v), background=bg)[0] for v in [(0, 0), (40, 0), (-40, 0), (0, -25)]}
    held, held_alpha = render(known, cam(20, 10), background=bg)
    scores = {}
    for k, chosen in ((1, [(0, 0)]), (2, [(0, 0), (40, 0)]), (4, list(views))):
        # Without sharpening: the sources are renders of a 15K avatar, already blurred by its
        # overlapping discs, and undoing a blur the sources do not have over-sharpens (the eyes
        # and lips get halos, 1.3 dB lower here); real portraits gain (bench fidelity).
        avatar, results = build_avatar([views[v] for v in chosen], count=15000, sharpen=False)
        assert all(r.ok for r in results)
        expr, pose, trans, kmat = _fit_view(avatar, held)
        rgb, alpha = render(avatar, Camera(TRACKING_VIEWMAT, kmat, 512, 512), expr, pose, trans, background=bg)
        mask = (held_alpha > 0.95) & (alpha > 0.95)
        scores[k] = masked_scores(held, rgb, mask)[0]
        save_png(OUT / f"held_out_k{k}.png", np.concatenate([rgb, held], 1))
    print("held-out PSNR by K:", {k: round(v, 2) for k, v in scores.items()})
    # The known avatar is itself a build, so its hair volume moves with the build's: measured
    # 17.75-18.15 dB for K = 1 over 2-4 hair-volume rounds (4 are used: real clips gain 1.9 dB).
    assert scores[1] > 17.5
    # More sources must not make it worse (0.3 dB slack for the fit's pose noise).
    assert scores[2] > scores[1] - 0.3
    assert scores[4] > scores[2] - 0.3


def test_cancel_stops_the_build(astronaut):
    import threading

    from savatar.core.build.build import BuildCancelled

    cancel = threading.Event()
    stages = []

    def progress(fraction: float, stage: str) -> None:
        stages.append(stage)
        if stage == "segmentation":
            cancel.set()

    with pytest.raises(BuildCancelled):
        build_avatar([astronaut], count=500, progress=progress, cancel=cancel)
    assert "colour" not in stages


def test_bilinear_sampling_many_points():
    # More points than cv2.remap takes on one side (32767), as with the default 60K Gaussians.
    from savatar.core.build.build import _bilinear

    image = np.arange(8 * 8, dtype=np.float32).reshape(8, 8)
    uv = np.tile([[3.5, 2.5], [4.0, 2.5]], (20000, 1))  # a pixel centre, then halfway to the next
    out = _bilinear(image, uv)
    assert out.shape == (40000,)
    np.testing.assert_allclose(out[0::2], image[2, 3])
    np.testing.assert_allclose(out[1::2], 0.5 * (image[2, 3] + image[2, 4]))


def _mouth_opening(avatar: GaussianAvatar, jaw: float) -> tuple[np.ndarray, np.ndarray]:
    """(render (256, 256, 3) of the mouth from the front with the jaw opened by jaw radians, the
    mean luminance of each pixel row across the opening's middle, from the upper lip down)."""
    rig = Rig.of(avatar)
    faces = np.asarray(rig.data.faces)[rig.data.lmk_faces]
    top_id, bottom_id, left_id, right_id = 0, 17, 61, 291  # MediaPipe: outer lips' middle and corners
    pose = np.zeros(15, np.float32)
    pose[6] = jaw
    lm = (rig.vertices(pose=pose).numpy()[faces] * rig.data.lmk_bary[:, :, None]).sum(1)
    cam = orbit_camera(0, 0, 0.3, tuple(lm[[top_id, bottom_id]].mean(0)), 256, 256, 30.0)
    rgb, _ = render(avatar, cam, pose=pose, background=(1.0, 1.0, 1.0))
    cam_pts = lm @ cam.viewmat[:3, :3].T + cam.viewmat[:3, 3]
    uv = cam_pts[:, :2] / cam_pts[:, 2:] * np.diag(cam.K)[:2] + cam.K[:2, 2]
    top, bottom = uv[top_id, 1], uv[bottom_id, 1]
    x0, x1 = sorted((uv[left_id, 0], uv[right_id, 0]))
    assert bottom - top > 40  # the jaw did open
    return rgb, rgb.mean(2)[int(top + 0.3 * (bottom - top)):int(top + 0.8 * (bottom - top)),
                            int(x0 + 0.3 * (x1 - x0)):int(x1 - 0.3 * (x1 - x0))].mean(1)


def test_open_mouth_from_closed_lips_shows_a_dark_cavity_and_the_source_keeps_its_lips():
    """A portrait with closed lips (a render of the bundled avatar): seen as in the portrait, the
    avatar's mouth is the portrait's; opened wide, it shows a dark cavity between the lips, not
    the lip line's colours stretched over the opening (a pale membrane before the lip curtain
    was coloured)."""
    from savatar.core.build.build import lips_closed
    from savatar.core.build.default_avatar import default_avatar

    bundled = default_avatar(30000)
    verts = Rig.of(bundled).vertices().numpy()
    portrait, _ = render(bundled, orbit_camera(0, 0, 0.6, tuple(verts.mean(0)), 512, 512, 30.0),
                         background=(1.0, 1.0, 1.0))
    avatar, results = build_avatar([(np.clip(portrait, 0, 1) * 255).astype(np.uint8)], count=15000)
    src = results[0]
    assert lips_closed(src.landmarks)
    rgb, rows = _mouth_opening(avatar, 0.35)
    save_png(OUT / "open_mouth_closed_source.png", rgb)
    print(f"open mouth: rows' luminance from {rows.min():.2f} (row {rows.argmin()}) to {rows.max():.2f} (row {rows.argmax()})")
    # Measured: 0.17 at the darkest; the membrane of before: 0.37-0.40 all the way down.
    assert rows.min() < 0.25
    # The source view's mouth (between the mouth corners, from the nose to the chin).
    seen, _ = render(avatar, source_camera(src), expr=src.expr, pose=src.pose, translation=src.translation,
                     background=(1.0, 1.0, 1.0))
    lm = src.landmarks
    box = (slice(int(lm[2, 1]), int(lm[152, 1])), slice(int(lm[61, 0]) - 10, int(lm[291, 0]) + 10))
    real = src.image[box] / 255.0 if src.image.dtype == np.uint8 else src.image[box]
    psnr = -10 * np.log10(float(((seen[box] - real) ** 2).mean()))
    print(f"source view's mouth: {psnr:.1f} dB")
    # Measured 30.3 dB; 28.0 with the curtain seen between the lips drawn as an open mouth (its
    # teeth showed between closed lips) and its front in the lip line's colours.
    assert psnr > 29.3


def test_open_mouth_from_parted_lips_keeps_the_portraits_mouth(built):
    """The astronaut smiles with her teeth showing: the lips are not closed, and the mouth keeps
    the portrait's colours (the source view test measures how well)."""
    from savatar.core.build.build import lips_closed

    _, results = built
    assert not lips_closed(results[0].landmarks)


def test_a_grin_leaves_no_dark_smears_beside_the_lips():
    """The default avatar grinning with the jaw a little open: the lip curtain's triangles at the
    corners stretch as far as an opened jaw's, and their Gaussians, drawn dark as an open mouth's
    inside, grew into dark smears beside the lips (curtain_sides hides them). Beside each corner,
    outside the lips, the skin stays skin."""
    from savatar.core.build.default_avatar import default_avatar
    from savatar.core.drive.calibration import OPEN_HEAD_REST
    from savatar.core.drive.tracking import intrinsics_for, mediapipe_indices, project_tracking
    from savatar.core.build.face_offsets import landmark_points

    avatar = default_avatar()
    rig = Rig.of(avatar)
    names = list(rig.data.expr_names)
    expr = np.array([OPEN_HEAD_REST.get(n, 0.0) for n in names], np.float32)
    expr[[names.index("mouthSmile_L"), names.index("mouthSmile_R")]] = 1.5
    pose = np.zeros(15, np.float32)
    pose[6] = 0.08
    t = np.array([0.0, 0.0, -0.42], np.float32)
    K = intrinsics_for(256, 256)
    rgb, _ = render(avatar, Camera(TRACKING_VIEWMAT, K, 256, 256), expr, pose, t, background=(1.0, 1.0, 1.0))
    verts = rig.vertices(expr, pose, t).numpy().astype(np.float64)
    index = list(mediapipe_indices(rig.data))
    corners = project_tracking(landmark_points(verts, rig.data)[[index.index(61), index.index(291)]], K)[:, :2]
    width = float(np.linalg.norm(corners[0] - corners[1]))
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    for (u, v), out in zip(corners, (-1, 1)):
        # A box just outside the corner, from 5% to 25% of the mouth's width beyond it (with the
        # smears, 15-17% of it was darker than 0.35; skin and the lips' edge, 0-2%).
        x0, x1 = sorted((int(u + out * 0.05 * width), int(u + out * 0.25 * width)))
        box = luma[int(v - 0.15 * width):int(v + 0.15 * width), x0:x1]
        assert box.size and (box < 0.35).mean() < 0.08, f"{(box < 0.35).mean():.0%} dark beside the corner"


def test_shrunk_curtain_keeps_an_opened_mouths_teeth_a_band():
    """The lip curtain's Gaussians grow with its triangles as the jaw opens: the upper teeth drawn
    on it grew into a white blob reaching down into the cavity. shrink_curtain caps them at the
    probe opening (the default avatar, whose curtain is not shrunk, is the before): the teeth stay
    a band under the upper lip over a dark cavity."""
    import copy

    from savatar.core.build import build as B
    from savatar.core.build.default_avatar import default_avatar
    from savatar.core.gaussians.binding import deform
    from savatar.core.head.head_model import HeadModel

    avatar = copy.deepcopy(default_avatar(60000))  # a build's count
    model = HeadModel(Rig.of(avatar).data)
    labels, names = model.data.face_regions()
    mouth = np.isin(labels[avatar.face.numpy()], [names.index(n) for n in B.MOUTH_REGIONS])
    with torch.no_grad():
        neutral = model(shape=avatar.shape[None], static_offset=avatar.static_offset).vertices[0]
    curtain, facing, _, _ = B._lip_curtain(avatar, model, neutral, mouth)
    inside = curtain & ~facing & (avatar.opacity_logit.numpy() > B.HIDDEN_LOGIT)
    _, before = _mouth_opening(avatar, 0.35)
    B.shrink_curtain(avatar, model, inside)
    rgb, after = _mouth_opening(avatar, 0.35)
    save_png(OUT / "open_mouth_shrunk_curtain.png", rgb)

    pose = torch.zeros(1, 15)
    pose[0, 6] = B.JAW_PROBE
    with torch.no_grad():
        opened = model(shape=avatar.shape[None], pose=pose, static_offset=avatar.static_offset).vertices[0]
        size = deform(avatar, opened, model.faces).scales.max(1).values.numpy()
    cover = B.CURTAIN_COVER * np.sqrt(
        B.face_areas(opened.double().numpy(), model.faces.numpy()[np.unique(avatar.face.numpy()[inside])]).sum()
        / inside.sum() / np.pi)
    assert size[inside].max() <= max(B.CURTAIN_SIZE, cover) * 1.001
    # Rows of the opening's middle brighter than 0.6 (teeth): measured 18 of 35 before, 16 after
    # at this count; on a portrait's build (Biden, Rose Leslie) the blob and its drip reached
    # about 70% down the opening, the band now under half of it.
    bright = lambda rows: int((rows > 0.6).sum())  # noqa: E731
    print(f"teeth rows across the opening's middle: {bright(before)} -> {bright(after)} of {len(after)}")
    assert bright(after) < bright(before)
    assert after.min() < 0.33  # the dark cavity under the teeth


def test_the_eyes_keep_the_portraits_pupils():
    """The bundled avatar rendered from the front with its eyes painted white, a blue iris and a
    black pupil where MediaPipe finds them: built from that, the avatar's pupils at the source view
    stay far darker than their irises. With the eyeballs' Gaussians spread over the whole ball (most
    of them inside the head), each spanned about 3 mm, more than the pupil, and the eyes rendered
    as grey discs (pupil about 0.55 of the iris's brightness)."""
    import mediapipe as mp

    from savatar.core.build.default_avatar import default_avatar

    conn = mp.solutions.face_mesh_connections
    # MediaPipe's eye contours and irises (centre, then four around), the image's left eye first.
    eyes = [sorted({i for e in conn.FACEMESH_RIGHT_EYE for i in e}), sorted({i for e in conn.FACEMESH_LEFT_EYE for i in e})]
    irises = [(468, 469, 470, 471, 472), (473, 474, 475, 476, 477)]
    bundled = default_avatar(30000)
    centre = tuple(Rig.of(bundled).vertices().numpy().mean(0))
    image, _ = render(bundled, orbit_camera(0, 0, 0.45, centre, 512, 512, 30.0), background=(1.0, 1.0, 1.0))
    with FaceLandmarker() as landmarker:
        pts = landmarker((np.clip(image, 0, 1) * 255).astype(np.uint8))
    assert pts is not None
    yy, xx = np.mgrid[:512, :512]

    def iris_distance(landmarks: np.ndarray, iris) -> tuple[np.ndarray, float]:
        """Each pixel's distance (512, 512) to the iris centre, and the iris radius, in pixels."""
        c = landmarks[iris[0], :2]
        return np.hypot(xx - c[0], yy - c[1]), float(np.linalg.norm(landmarks[list(iris[1:]), :2] - c, axis=1).mean())

    for contour, iris in zip(eyes, irises):
        inside = np.zeros((512, 512), np.uint8)
        cv2.fillConvexPoly(inside, cv2.convexHull(np.round(pts[contour, :2]).astype(np.int32)), 1)
        d, r = iris_distance(pts, iris)
        image[inside > 0] = (0.95, 0.95, 0.95)
        image[(inside > 0) & (d < r)] = (0.25, 0.45, 0.75)
        image[(inside > 0) & (d < 0.45 * r)] = (0.02, 0.02, 0.02)
    portrait = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    avatar, (src,) = build_avatar([portrait], count=30000)
    rgb, _ = render(avatar, source_camera(src), src.expr, src.pose, src.translation, background=(1.0, 1.0, 1.0))
    grey = rgb.mean(2)
    for iris in irises:
        d, r = iris_distance(src.landmarks, iris)
        pupil, ring = float(grey[d < 0.3 * r].mean()), float(grey[(d > 0.6 * r) & (d < r)].mean())
        print(f"pupil {pupil:.3f}, iris {ring:.3f}")
        assert pupil < 0.35 * ring  # measured 0.07-0.17 of it (0.55 before)
    save_png(OUT / "eyes.png", np.concatenate([portrait / 255.0, rgb], 1))

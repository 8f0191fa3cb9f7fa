"""Build an avatar from one or a few portraits, with no learned weights (issue 6).

Stages: load and check each source (decode, downscale, face, size, blur), fit one identity and
per-source expression/pose to all sources' MediaPipe landmarks, segment the person from the
background, lay Gaussians out on the head, lift each Gaussian's colour from the sources where it
is seen (depth test, viewing angle, person mask; a weighted mean, so the order and number of
sources do not matter) and fill what no source saw (mirror, propagation over the surface,
mouth defaults).

Cameras live in the tracking world of savatar.core.drive.tracking: camera at the origin looking
along world -z (viewmat TRACKING_VIEWMAT), intrinsics intrinsics_for(W, H) (REAL_FOV_Y_DEG). A source's
view is reproduced with Camera(TRACKING_VIEWMAT, source.K, W, H) and the source's expr, pose and
translation. The avatar rests at neutral: its layout is on the neutral head and default_expr is
zero, only the colours come from the (posed) sources. The avatar keeps face crops of the
sources with their fitted parameters and loss masks (metadata["sources"], stored_sources) for
refinement.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree

from savatar.core.drive.calibration import INNER_LIPS
from savatar.core.drive.tracking import FACE_OVAL, FaceFitter, TrackerParams, intrinsics_for, project_tracking
from savatar.core.gaussians.binding import deform, face_frames, init_avatar, rebind
from savatar.core.gaussians.gaussians import GaussianAvatar, rgb_to_sh0, sh0_to_rgb
from savatar.core.build.colour_fit import fit_colours
from savatar.core.build.face_offsets import landmark_offsets, landmark_points
from savatar.core.build.hair_colour import EYE_CORNERS, JAW_ANGLES, hair_colour, long_hair
from savatar.core.build.hair_volume import hair_offsets
from savatar.core.build.mouth_interior import (CAVITY, curtain_colours, lip_curtain, mouth_interior_colours,
                                               stretched_faces)
from savatar.core.build.parted_mouth import (JAW_JOINT, LOWER_SHARE, behind_lips, facing_discs, jaw_share,
                                             teeth_anchors)
from savatar.core.head.head_model import HeadModel, HeadModelData
from savatar.core.head.mesh_ops import face_areas
from savatar.core.io.pixels import to_uint8
from savatar.core.refine.frame_sources import HeadMasker, View, prepare_view

MAX_SIDE = 1024  # larger images are downscaled: landmarks and colours gain nothing above this
MIN_FACE_PX = 80  # landmark box side below which colours would be a blur of a few pixels
# Variance of the Laplacian of the face crop resized to 128 px (grey 0..255). Sharp portraits
# measure a few hundred; a Gaussian blur of sigma 1.5 px on the crop brings one under 30.
MIN_SHARPNESS = 30.0
SHAPE_PRIOR = 300.0  # px^2 per unit^2 of shape coefficient (one unit moves vertices 1-7 mm)
SHAPE_LIMIT = 3.0
THUMB_SIZE = 128
SOURCE_SIDE = 512  # the avatar keeps its sources (stored_sources) with at most this side
DEPTH_TOL = 0.005  # metres a Gaussian may lie behind the nearest surface and still count as seen
MIRROR_RADIUS = 0.004  # metres from the mirrored position to the seen Gaussian it copies
MIRROR_GAP = 0.01  # metres from the nearest seen Gaussian of its side from which an unseen one is mirrored
MIN_SEEN_WEIGHT = 0.02
# Summed weight from which a lifted colour is trusted fully. Below it (grazing views, the
# segmentation's edge) the lifted colour fades into the colour filled from the trusted ones,
# so the border of what a portrait saw is a soft blend, not a jagged seam of smeared pixels.
TRUSTED_WEIGHT = 0.06
SHARPEN_WEIGHT = 0.25  # from this weight (cos of the view ~0.6) a colour follows the sharpening fully
FEATHER_NEIGHBOURS = 16  # _feathered: neighbours averaged per pass (about 2-3 mm on a 60K avatar)
FEATHER_PASSES = 3
# Metres from the nearest seen Gaussian over which filled colour settles to its group's median:
# the back of the head takes the hair's overall colour instead of streaks dragged from the rim.
SETTLE_DISTANCE = 0.05
RING_BAND = 0.01  # metres up and down within which ring_colours takes the seen neck's colours
MOUTH_REGIONS = ("mouth_cavity", "upper_teeth", "lower_teeth")
JAW_PROBE = 0.35  # radians of jaw opening at which the lip curtain is found and coloured
MOUTH_CORNERS = (61, 291)  # MediaPipe Face Mesh landmarks
# The inner lip contour, MediaPipe Face Mesh landmarks in order around the opening.
INNER_LIP_RING = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OPENING_MARGIN = 0.06  # of the mouth's width: the opening is grown by this against landmark error
OVAL_MARGIN = 0.03  # of the face's width: the face oval is shrunk by this (face_oval)
FACE_SIDES = (234, 454)  # the face oval's widest points, in front of the ears
EAR_GAP = 0.008  # metres behind FACE_SIDES where the ears begin (on the open head)
FACING_Z = 0.6  # normal's forward component from which a Gaussian faces the front
LIP_LINE_OPACITY = 0.3  # of the lip curtain's Gaussians that face forwards with the mouth closed
LIP_LINE_LOGIT = float(np.log(LIP_LINE_OPACITY / (1.0 - LIP_LINE_OPACITY)))
LIP_LINE_SHADE = 0.85  # of the nearest lips' colour: where lips meet at rest is in their shadow
HIDDEN_LOGIT = -12.0  # opacity logit of Gaussians that must not show (opacity 6e-6)
CURTAIN_SIDES = 0.5  # of the lip curtain's half width: beyond, its inside is hidden (curtain_sides)
CURTAIN_SIZE = 0.002  # metres: the least largest scale shrink_curtain leaves a Gaussian at JAW_PROBE
CURTAIN_COVER = 1.7  # shrink_curtain: disc radius over the radius of an even share of the opened curtain
CLOSED_LIPS = 0.06  # inner lips' gap over the eye corners' distance below which lips are closed
# or barely parted (measured: closed 0.00-0.002, parted without teeth 0.05, smiles with teeth 0.11-0.16)
# Facial features get more Gaussians than plain skin: they carry most of the likeness.
# The eyes' front caps get the most: at the face's density a Gaussian spanned 3 mm (more than a
# pupil), and an avatar's eyes were blurred grey discs without pupils or highlights.
FEATURE_DENSITY = {"eye_area": 6.0, "lip_area": 6.0, "nose_area": 5.0, "eye_front": 20.0}
EYEBALLS = ("left_eyeball", "right_eyeball")  # the head model's vertex regions
EYE_CAP = 0.2  # eye_front: eyeball vertices ahead of its centre by this of its radius (78 degrees)


class BuildError(Exception):
    """No usable source (the message lists why each one was rejected)."""


class BuildCancelled(Exception):
    """The cancel event was set during a build."""


@dataclass
class SourceResult:
    """One input. status "ok" | "error"; reason: one line (empty when there is nothing to say).

    For an ok source: image (H, W, 3) float32 as used (after downscaling); landmarks (478, 3)
    pixels; mask (H, W) float32 person probability; K (3, 3); expr (E,), pose (15,),
    translation (3,) of the final fit; residual_px the RMS landmark error of that fit.
    """

    name: str
    status: str = "ok"
    reason: str = ""
    image: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    mask: np.ndarray | None = None
    K: np.ndarray | None = None
    expr: np.ndarray | None = None
    pose: np.ndarray | None = None
    translation: np.ndarray | None = None
    residual_px: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, reason: str) -> "SourceResult":
        self.status, self.reason = "error", reason
        return self

    def line(self) -> str:
        """'name: ok' / 'name: ok (note; note)' / 'name: error: reason' for status lists."""
        if not self.ok:
            return f"{self.name}: error: {self.reason}"
        return f"{self.name}: ok" + (f" ({'; '.join(self.notes)})" if self.notes else "")


def _decode(src: str | Path | np.ndarray, name: str) -> tuple[np.ndarray | None, str, str]:
    """(RGB uint8 (H, W, 3) or None, error reason, note). PIL rather than cv2.imread because
    cv2 returns a half-grey picture for a truncated JPEG where PIL raises."""
    if isinstance(src, np.ndarray):
        img = src
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, 2)
        if img.ndim != 3 or img.shape[2] not in (3, 4):
            return None, f"array of shape {img.shape} is not an (H, W, 3) image", ""
        if img.dtype != np.uint8:
            img = to_uint8(img[..., :3])
        return np.ascontiguousarray(img[..., :3]), "", ""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(src)
    if not path.is_file():
        return None, "no such file", ""
    try:
        with Image.open(path) as im:
            full = im.size
            # JPEG decodes at a reduced scale directly: a 4000 px photo costs a fraction.
            im.draft("RGB", (MAX_SIDE, MAX_SIDE))
            im.load()
            im = ImageOps.exif_transpose(im).convert("RGB")
            arr = np.asarray(im)
    except UnidentifiedImageError:
        return None, "not an image (unrecognised format)", ""
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"corrupt or truncated image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", ""
    note = f"downscaled from {full[0]}x{full[1]}" if max(full) > MAX_SIDE else ""
    return arr, "", note


def _downscale(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = MAX_SIDE / max(h, w)
    if s >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def face_sharpness(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of the landmark box (image (H, W, 3) uint8, landmarks (L, 2+)),
    the box resized to 128 px so the number does not depend on the face's pixel size."""
    x0, y0 = np.floor(landmarks[:, :2].min(0)).astype(int)
    x1, y1 = np.ceil(landmarks[:, :2].max(0)).astype(int)
    h, w = image.shape[:2]
    crop = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def thumbnail(image: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, letterboxed on black."""
    h, w = image.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size, 3), np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def check_sources(items: Sequence[str | Path | np.ndarray], landmarker) -> tuple[list[SourceResult], list[np.ndarray]]:
    """Decode and check every input; returns one SourceResult each, and the thumbnails of the
    ok ones (in input order)."""
    results, thumbs = [], []
    for i, src in enumerate(items):
        name = Path(src).name if not isinstance(src, np.ndarray) else f"image {i + 1}"
        res = SourceResult(name)
        results.append(res)
        img, err, note = _decode(src, name)
        if img is None:
            res.fail(err)
            continue
        if min(img.shape[:2]) < 32:
            res.fail(f"image too small ({img.shape[1]}x{img.shape[0]})")
            continue
        if max(img.shape[:2]) > MAX_SIDE:
            note = note or f"downscaled from {img.shape[1]}x{img.shape[0]}"
            img = _downscale(img)
        if note:
            res.notes.append(note)
        lm = landmarker(img)
        if lm is None:
            res.fail("no face found")
            continue
        side = float(max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1])))
        if side < MIN_FACE_PX:
            res.fail(f"face too small ({side:.0f} px, need {MIN_FACE_PX})")
            continue
        sharp = face_sharpness(img, lm)
        if sharp < MIN_SHARPNESS:
            res.fail(f"face too blurred (sharpness {sharp:.0f}, need {MIN_SHARPNESS:.0f})")
            continue
        if landmarker.face_count > 1:
            res.notes.append(f"{landmarker.face_count} faces found, took the largest")
        res.image = img.astype(np.float32) / 255.0
        res.landmarks = lm
        thumbs.append(thumbnail(img))
    return results, thumbs


def _shape_jacobian(model: HeadModel, shape: np.ndarray, src: SourceResult) -> tuple[np.ndarray, np.ndarray]:
    """World landmarks (L, 3) at the source's pose and their derivative (S, L, 3) w.r.t. shape.
    Exact by differences: at fixed pose and expression the posed landmarks are affine in shape."""
    s = len(shape)
    batch = np.repeat(shape[None], s + 1, 0)
    batch[1:] += np.eye(s)
    f = lambda a: torch.as_tensor(np.repeat(np.asarray(a, np.float32)[None], s + 1, 0))  # noqa: E731
    with torch.no_grad():
        lm = model(shape=torch.as_tensor(batch, dtype=torch.float32), expr=f(src.expr), pose=f(src.pose),
                   translation=f(src.translation)).landmarks.double().numpy()
    return lm[0], lm[1:] - lm[:1]


def fit_identity(data: HeadModelData, sources: list[SourceResult], rounds: int = 3,
                 check: Callable[[], None] = lambda: None) -> np.ndarray:
    """Joint fit: shape (S,) shared by all sources, expression/pose/translation per source
    (written into each SourceResult). Alternates per-source Levenberg-Marquardt fits (identity
    fixed) with one Gauss-Newton step of the shape over all sources' landmarks (poses fixed)."""
    model = HeadModel(data)
    n_shape = data.shapedirs.shape[2]
    shape = np.zeros(n_shape)
    params = TrackerParams(filter=False, static_images=True)
    states: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(sources)
    fitters: list[FaceFitter] = []
    for r in range(rounds + 1):
        fitters = []
        for i, src in enumerate(sources):
            check()
            h, w = src.image.shape[:2]
            src.K = intrinsics_for(w, h)
            fitter = FaceFitter(data, src.K, shape, params)
            if states[i] is not None:
                fitter.r0, fitter.x = states[i]
            fit = fitter.fit(src.landmarks, iterations=40 if states[i] is None else 15)
            states[i] = (fitter.r0, fitter.x.copy())
            src.expr, src.pose, src.translation, src.residual_px = fit.expr, fit.pose, fit.translation, fit.residual_px
            fitters.append(fitter)  # for the shape step's projection and landmark weights
        if r == rounds:
            break
        h_acc = np.diag(np.full(n_shape, SHAPE_PRIOR))
        g_acc = SHAPE_PRIOR * shape
        for src, fitter in zip(sources, fitters):
            x0, jac = _shape_jacobian(model, shape, src)
            uv, p = fitter._project(x0, derivative=True)  # p (2, L, 3)
            a = np.einsum("cld,sld->cls", p, jac).reshape(-1, n_shape)  # rows all u then all v
            res = (uv - src.landmarks[:, :2]).T.reshape(-1)
            wt = np.tile(fitter.weights, 2)
            h_acc += a.T @ (a * wt[:, None])
            g_acc += a.T @ (wt * res)
        shape = np.clip(shape - np.linalg.solve(h_acc, g_acc), -SHAPE_LIMIT, SHAPE_LIMIT)
    return shape


def person_masks(sources: list[SourceResult]) -> None:
    """MediaPipe selfie segmentation (in the wheel): person probability (H, W) per source."""
    import mediapipe as mp

    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        for src in sources:
            img = to_uint8(src.image)
            m = seg.process(img).segmentation_mask
            src.mask = np.zeros(img.shape[:2], np.float32) if m is None else np.asarray(m, np.float32)


def _landmark_vertices(data: HeadModelData, landmark_ids: set[int]) -> np.ndarray:
    """Vertices of the triangles that carry the given MediaPipe landmarks."""
    ids = np.array(sorted(i for i in landmark_ids if i < len(data.lmk_faces)), np.int64)
    return np.unique(data.faces[data.lmk_faces[ids]])


def feature_regions(data: HeadModelData, radius: float = 0.008) -> HeadModelData:
    """A copy of data with extra vertex regions eye_area, lip_area and nose_area: face vertices
    within radius (metres, on the template) of the triangles of MediaPipe's eye, lip and nose
    landmarks, and eye_front: the eyeballs' front caps (EYE_CAP), so init_avatar's
    region_density can put more Gaussians there."""
    import mediapipe as mp

    conn = mp.solutions.face_mesh_connections
    groups = {
        "eye_area": conn.FACEMESH_LEFT_EYE | conn.FACEMESH_RIGHT_EYE | conn.FACEMESH_LEFT_EYEBROW
        | conn.FACEMESH_RIGHT_EYEBROW | conn.FACEMESH_IRISES,
        "lip_area": conn.FACEMESH_LIPS,
        "nose_area": conn.FACEMESH_NOSE,
    }
    face = np.asarray(data.vertex_regions.get("face", np.arange(len(data.v_template))), np.int64)
    tree = cKDTree(data.v_template[face])
    regions = dict(data.vertex_regions)
    for name, edges in groups.items():
        ids = {i for e in edges for i in e}
        seeds = data.v_template[_landmark_vertices(data, ids)]
        near = tree.query_ball_point(seeds, radius)
        regions[name] = np.unique(face[np.concatenate([np.asarray(n, np.int64) for n in near])])
    caps = []
    for name in EYEBALLS:
        ids = np.asarray(data.vertex_regions.get(name, []), np.int64)
        if len(ids):
            rel = data.v_template[ids] - data.v_template[ids].mean(0)
            caps.append(ids[rel[:, 2] > EYE_CAP * np.linalg.norm(rel, axis=1).max()])
    if caps:
        regions["eye_front"] = np.concatenate(caps)
    return replace(data, vertex_regions=regions)


def rasterize_depth(verts_uvz: np.ndarray, faces: np.ndarray, width: int, height: int,
                    chunk: int = 4096) -> np.ndarray:
    """Z-buffer (H, W) float32 of camera-space depth (inf where empty).

    verts_uvz: (V, 3) vertices projected to pixel u, v and camera depth z; faces (F, 3).
    Each triangle's bounding box is sampled at pixel centres (vectorized over triangles in
    chunks), barycentric depth kept where inside, minimum per pixel.
    """
    zbuf = np.full(height * width, np.inf, np.float32)
    tri = verts_uvz[faces]  # (F, 3, 3)
    keep = (tri[:, :, 2] > 1e-3).all(1)
    lo = np.floor(tri[:, :, :2].min(1))
    hi = np.ceil(tri[:, :, :2].max(1))
    keep &= (hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] < width) & (lo[:, 1] < height)
    tri, lo, hi = tri[keep], lo[keep], hi[keep]
    # Triangles grouped by box size (powers of two) so small ones, nearly all of them, do not pay
    # for the largest box; boxes are capped at 256 px (a triangle that big is a close-up anyway).
    bucket = np.minimum(2 ** np.ceil(np.log2(np.maximum((hi - lo).max(1), 1))), 256).astype(int)
    for size in np.unique(bucket):
        sel = np.flatnonzero(bucket == size)
        g = np.arange(size + 1)
        gx, gy = np.meshgrid(g, g)
        gx, gy = gx.ravel(), gy.ravel()
        step = max(1, chunk * 64 // len(gx))  # about chunk x 64 samples per pass
        for s in range(0, len(sel), step):
            idx = sel[s:s + step]
            t, o = tri[idx], lo[idx]
            px = o[:, 0:1] + gx[None] + 0.5  # (n, P)
            py = o[:, 1:2] + gy[None] + 0.5
            a, b, c = t[:, 0], t[:, 1], t[:, 2]
            det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
            det = np.where(np.abs(det) < 1e-12, 1e-12, det)[:, None]
            w1 = ((px - a[:, 0:1]) * (c[:, 1:2] - a[:, 1:2]) - (c[:, 0:1] - a[:, 0:1]) * (py - a[:, 1:2])) / det
            w2 = ((b[:, 0:1] - a[:, 0:1]) * (py - a[:, 1:2]) - (px - a[:, 0:1]) * (b[:, 1:2] - a[:, 1:2])) / det
            w0 = 1 - w1 - w2
            inside = (w0 >= -1e-4) & (w1 >= -1e-4) & (w2 >= -1e-4) & (px >= 0) & (py >= 0) & (px < width) & (py < height)
            z = w0 * a[:, 2:3] + w1 * b[:, 2:3] + w2 * c[:, 2:3]
            pix = (py.astype(np.int64) * width + px.astype(np.int64))[inside]
            np.minimum.at(zbuf, pix, z[inside].astype(np.float32))
    return zbuf.reshape(height, width)


def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample image (H, W, C) or (H, W) at pixel positions uv (N, 2) (pixel centres at +0.5)."""
    n = len(uv)
    # cv2.remap maps must stay under 32767 on a side: the points go in as rows of 1024.
    cols = 1024
    rows = max(1, -(-n // cols))
    maps = np.zeros((2, rows * cols), np.float32)
    maps[:, :n] = (uv[:, :2] - 0.5).T
    out = cv2.remap(image, maps[0].reshape(rows, cols), maps[1].reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, *image.shape[2:])[:n]


def lift_colours(avatar: GaussianAvatar, model: HeadModel,
                 src: SourceResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One source's colour (N, 3) for every Gaussian, its weight (N,) in [0, 1]: visible x (cos of
    the viewing angle)^2 x person mask, visible (N,) bool: in the image and in front (depth test
    against the posed mesh), in_opening (N,) bool: visible inside the source's parted lips, and
    in_face (N,) bool: inside the source's face oval (face_oval). Weight 0 where the source does
    not see the Gaussian."""
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    with torch.no_grad():
        verts = model(shape=avatar.shape[None], expr=f(src.expr), pose=f(src.pose),
                      translation=f(src.translation), static_offset=avatar.static_offset).vertices[0]
        g = deform(avatar, verts, model.faces)
        R, _, _ = face_frames(verts, model.faces)
    means = g.means.double().numpy()
    normals = R[:, :, 1].double().numpy()[avatar.face.numpy()]
    h, w = src.image.shape[:2]
    uvz = project_tracking(means, src.K)
    zbuf = rasterize_depth(project_tracking(verts.double().numpy(), src.K), model.faces.numpy(), w, h)
    ui = np.clip(uvz[:, 0].astype(np.int64), 0, w - 1)
    vi = np.clip(uvz[:, 1].astype(np.int64), 0, h - 1)
    inside = (uvz[:, 0] >= 0) & (uvz[:, 0] < w) & (uvz[:, 1] >= 0) & (uvz[:, 1] < h)
    visible = inside & (uvz[:, 2] <= zbuf[vi, ui] + DEPTH_TOL)
    to_cam = -means / np.linalg.norm(means, axis=1, keepdims=True)
    cos = np.clip((normals * to_cam).sum(1), 0.0, 1.0)
    # Grazing views smear a pixel over a long strip of surface; below cos 0.15 nothing is kept.
    angle = np.clip((cos - 0.15) / 0.85, 0.0, 1.0) ** 2
    # The mask is eroded so silhouette pixels (mixed with background) are not used: the
    # segmentation's edge spills a little background, which the grown cranium would pick up.
    k = max(3, int(round(0.015 * max(h, w))) | 1)
    mask = cv2.erode(src.mask, np.ones((k, k), np.uint8))
    weight = visible * angle * np.clip(_bilinear(mask, uvz[:, :2]), 0.0, 1.0)
    colour = _bilinear(src.image, uvz[:, :2]).astype(np.float64)
    return (colour, weight, visible, visible & (_bilinear(mouth_opening(src), uvz[:, :2]) > 0.5),
            _bilinear(face_oval(src), uvz[:, :2]) > 0.5)


def face_oval(src: SourceResult) -> np.ndarray:
    """(H, W) float32, 1 inside the source's face oval (MediaPipe's contour of the face), shrunk
    by OVAL_MARGIN of its width so the contour's own shading (the jaw's shadow, the edge of the
    hair beside it) is outside, 0 elsewhere."""
    h, w = src.image.shape[:2]
    ring = np.asarray(src.landmarks, np.float64)[FACE_OVAL, :2]
    out = np.zeros((h, w), np.float32)
    cv2.fillPoly(out, [np.round(ring).astype(np.int32)], 1.0)
    k = max(3, int(round(OVAL_MARGIN * np.ptp(ring[:, 0]))) | 1)
    return cv2.erode(out, np.ones((k, k), np.uint8))


def cheek_sides(positions: np.ndarray, region: np.ndarray, names: Sequence[str], neutral: np.ndarray,
                data: HeadModelData) -> np.ndarray:
    """(N,) bool: the Gaussians (positions (N, 3) on the neutral head, region (N,) index into names)
    on the cheeks and the jaw's sides: the face below the eyes, and the side of the head between
    the face and the ears from the eyes down to the jaw's angle (neutral (V, 3): the neutral
    mesh). A frontal portrait shows them at grazing angles, beside its face contour."""
    eyes, jaw = _landmark_level(neutral, data, EYE_CORNERS, 1), _landmark_level(neutral, data, JAW_ANGLES, 1)
    sides = _landmark_level(neutral, data, FACE_SIDES, 2)
    if eyes is None or jaw is None or sides is None:
        return np.zeros(len(positions), bool)
    sides -= EAR_GAP
    y, z = positions[:, 1], positions[:, 2]
    face = region == names.index("face") if "face" in names else np.zeros(len(region), bool)
    scalp = region == names.index("scalp") if "scalp" in names else np.zeros(len(region), bool)
    return (face & (y < eyes)) | (scalp & (y < eyes) & (y > jaw) & (z > sides))


def _landmark_level(verts: np.ndarray, data: HeadModelData, ids: Sequence[int], axis: int) -> float | None:
    """Mean coordinate `axis` (metres) of MediaPipe landmarks ids on a mesh (V, 3); None where the
    model's landmark embedding lacks one of them."""
    index = list(np.asarray(data.lmk_mediapipe if data.lmk_mediapipe is not None else [], np.int64))
    if any(i not in index for i in ids):
        return None
    return float(landmark_points(verts, data)[[index.index(i) for i in ids], axis].mean())


def mouth_opening(src: SourceResult) -> np.ndarray:
    """(H, W) float32, 1 inside the source's parted lips (the inner lip contour, grown by a
    margin for the landmarks' error), 0 elsewhere and everywhere when the lips are closed."""
    h, w = src.image.shape[:2]
    out = np.zeros((h, w), np.float32)
    if lips_closed(src.landmarks):
        return out
    ring = np.round(np.asarray(src.landmarks, np.float64)[list(INNER_LIP_RING), :2]).astype(np.int32)
    cv2.fillPoly(out, [ring], 1.0)
    width = np.linalg.norm(np.subtract(*np.asarray(src.landmarks, np.float64)[list(MOUTH_CORNERS), :2]))
    k = max(3, int(round(OPENING_MARGIN * width)) | 1)
    return cv2.dilate(out, np.ones((k, k), np.uint8))


def _feathered(nb: np.ndarray, trust: np.ndarray, passes: int = FEATHER_PASSES) -> np.ndarray:
    """trust (N,) in [0, 1] lowered near where it falls: each pass takes the smaller of a
    Gaussian's own and its nearest neighbours' (nb (N, k) indices) mean. Where what a portrait saw
    ends (an occluding contour, the mask's edge) the lifted colours then fade into the filled ones
    over a few millimetres instead of ending in a jagged seam."""
    for _ in range(passes):
        trust = np.minimum(trust, trust[nb].mean(1))
    return trust


def fill_unseen(positions: np.ndarray, colour: np.ndarray, seen: np.ndarray, mouth: np.ndarray,
                default: np.ndarray, neighbours: int = 8, smooth: int = 10,
                group: np.ndarray | None = None,
                settle: dict[int, np.ndarray] | None = None, mirror: np.ndarray | None = None) -> np.ndarray:
    """Colours (N, 3) for Gaussians no source saw, from those it did.

    positions: (N, 3) on the neutral head (x = 0 is the symmetry plane); colour (N, 3) valid
    where seen (N,) bool; mouth (N,) bool: mouth cavity and teeth, which take default (N, 3)
    (the model's colours) unless seen, and neither give nor take propagated colour.
    1. mirror: the seen Gaussians near (-x, y, z), for the unseen ones farther than MIRROR_GAP
    from anything seen of their group (and, given mirror (N,) bool, only those it marks);
    2. propagation: unseen Gaussians repeatedly take the mean of their already coloured nearest
    neighbours (a front moving out from the seen area), then a few smoothing passes over the
    filled ones only. group (N,) int, optional:
    propagation stays within a group that has seen Gaussians (the back of the head takes the
    hair's colour from the cranium, not the skin of the cheeks next to it). 3. far from what was
    seen, filled colour settles to the median seen colour of its group (over SETTLE_DISTANCE):
    low-frequency and seamless where no source could say anything. settle: {group: (3,) or
    (N, 3)} a better colour to settle to than that median (the hair's colour for the cranium),
    one for the whole group or one per Gaussian (ring_colours for the neck).
    """
    out = colour.copy()
    known = seen.copy()
    out[mouth & ~seen] = default[mouth & ~seen]
    known |= mouth
    donors = np.flatnonzero(seen & ~mouth)
    todo = np.flatnonzero(~known)
    group = np.zeros(len(out), np.int64) if group is None else group
    for g in np.unique(group[todo]):
        # Mirrored from the same group only: a cheek never takes the hair seen beside the face.
        donors_g, todo_g = donors[group[donors] == g], todo[group[todo] == g]
        if not len(donors_g):
            continue
        tree = cKDTree(positions[donors_g])
        # Only what lies far from anything seen on its own side: a narrow unseen band (a nose's
        # far wall, the strip beside the face's contour) mirrored took the other side's shading
        # and drew it as outlines; neighbours fill it seamlessly.
        far = tree.query(positions[todo_g])[0] > MIRROR_GAP
        mirrored = positions[todo_g] * np.array([-1.0, 1.0, 1.0])
        dist, j = tree.query(mirrored, k=min(4, len(donors_g)))
        dist, j = np.atleast_2d(dist.T).T, np.atleast_2d(j.T).T
        near = dist < MIRROR_RADIUS
        hit = near.any(1) & far
        if mirror is not None:
            hit &= mirror[todo_g]
        wts = near / np.maximum(dist, 1e-4)
        col = (wts[:, :, None] * out[donors_g[j]]).sum(1) / np.maximum(wts.sum(1), 1e-12)[:, None]
        out[todo_g[hit]] = col[hit]
        known[todo_g[hit]] = True
    seen_in = {g: int((seen & ~mouth & (group == g)).sum()) for g in np.unique(group)}
    fallback = max(seen_in, key=seen_in.get)
    for g, count in seen_in.items():
        if not count:  # nothing seen in this group: the best-seen group fills it
            group = np.where(group == g, fallback, group)
    unseen = ~known.copy()
    for g in np.unique(group):
        members = np.flatnonzero(~mouth & (group == g))
        _propagate(positions, out, known, members, default, neighbours, smooth)
        donors_g = members[seen[members]]
        filled = members[unseen[members]]
        if len(donors_g) and len(filled):
            dist, _ = cKDTree(positions[donors_g]).query(positions[filled])
            t = np.clip(dist / SETTLE_DISTANCE, 0.0, 1.0)[:, None] ** 0.5
            target = (settle or {}).get(int(g))
            if target is None:
                target = np.median(colour[donors_g], axis=0)
            elif np.ndim(target) == 2:
                target = target[filled]
            out[filled] = (1 - t) * out[filled] + t * target
    return out


def ring_colours(positions: np.ndarray, colour: np.ndarray, donors: np.ndarray, members: np.ndarray,
                 fallback: np.ndarray) -> np.ndarray:
    """(N, 3) for the members (N,) bool: the middle colour (_middle_colour; colour (N, 3)) of the
    donors (N,) bool within RING_BAND of each member's height (positions (N, 3), y up), fallback
    (3,) where no donor is that near. The neck and shoulders seen from the front carry what the
    person wears at each height (a collar, a suit's shoulders, or the bare neck): what no portrait
    saw around the back wears it too, where it had been skin under the suit's front."""
    out = np.tile(np.asarray(fallback, np.float64), (len(positions), 1))
    if not donors.any() or not members.any():
        return out
    order = np.flatnonzero(donors)[np.argsort(positions[donors, 1])]
    heights = positions[order, 1]
    # Members in bins of a fifth of the band share one colour: a few hundred, not one each.
    idx = np.flatnonzero(members)
    bins = np.floor(positions[idx, 1] / (RING_BAND / 5)).astype(np.int64)
    for b in np.unique(bins):
        y = (b + 0.5) * RING_BAND / 5
        lo, hi = np.searchsorted(heights, [y - RING_BAND, y + RING_BAND])
        if hi > lo:
            out[idx[bins == b]] = _middle_colour(colour[order[lo:hi]])
    return out


def _middle_colour(colours: np.ndarray) -> np.ndarray:
    """(3,) the mean of the colours (M, 3) between the 40th and 60th percentiles of brightness:
    one that is there, where a per-channel median of a dark suit, a white collar and skin made a
    brown that is none of them."""
    order = np.argsort(colours @ np.array([0.299, 0.587, 0.114]))
    m = len(order) - 1
    return colours[order[int(0.4 * m):int(np.ceil(0.6 * m)) + 1]].mean(0)


def _propagate(positions: np.ndarray, out: np.ndarray, known: np.ndarray, skin: np.ndarray,
               default: np.ndarray, neighbours: int, smooth: int) -> None:
    """fill_unseen's front propagation and smoothing over the Gaussians skin, in place."""
    if not len(skin):
        return
    _, nb = cKDTree(positions[skin]).query(positions[skin], k=min(neighbours + 1, len(skin)))
    nb = skin[np.atleast_2d(nb)[:, 1:]]  # (M, k) global indices, self dropped
    filled = np.zeros(len(out), bool)
    for _ in range(500):
        pending = np.flatnonzero(~known[skin])
        if not len(pending):
            break
        rows = nb[pending]
        k = known[rows]
        have = k.any(1)
        if not have.any():
            break
        mean = (k[:, :, None] * out[rows]).sum(1) / np.maximum(k.sum(1), 1)[:, None]
        gi = skin[pending[have]]
        out[gi] = mean[have]
        known[gi] = True
        filled[gi] = True
    rest = skin[~known[skin]]
    out[rest] = default[rest]  # islands no front reached
    known[rest] = True
    smooth_idx = np.flatnonzero(filled[skin])
    for _ in range(smooth):
        if not len(smooth_idx):
            break
        out[skin[smooth_idx]] = out[nb[smooth_idx]].mean(1)


def lips_gap(landmarks: np.ndarray) -> float:
    """The inner lips' gap over the distance between the eyes' outer corners. landmarks: (478, 2+)
    MediaPipe Face Mesh, pixels."""
    pts = np.asarray(landmarks, np.float64)[:, :2]
    gap = np.linalg.norm(pts[INNER_LIPS[0]] - pts[INNER_LIPS[1]])
    return float(gap / max(np.linalg.norm(pts[EYE_CORNERS[0]] - pts[EYE_CORNERS[1]]), 1e-9))


def lips_closed(landmarks: np.ndarray) -> bool:
    """Whether a face's lips are closed or barely parted (no teeth to see): lips_gap below
    CLOSED_LIPS. landmarks: (478, 2+) MediaPipe Face Mesh, pixels."""
    return lips_gap(landmarks) < CLOSED_LIPS


def _opened_mesh(avatar: GaussianAvatar, model: HeadModel) -> torch.Tensor:
    """(V, 3) the avatar's head mesh at rest with the jaw opened by JAW_PROBE."""
    pose = torch.zeros(1, 15)
    pose[0, 6] = JAW_PROBE
    with torch.no_grad():
        return model(shape=avatar.shape[None], pose=pose, static_offset=avatar.static_offset).vertices[0]


def _lip_curtain(avatar: GaussianAvatar, model: HeadModel, neutral: torch.Tensor,
                 mouth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(the Gaussians (N,) bool on the lip curtain (mouth_interior.lip_curtain; none where the
    head model's landmarks do not include the mouth corners), those (N,) bool of them facing
    forwards with the mouth closed, all Gaussians' positions (N, 3) with the jaw opened by
    JAW_PROBE, the Gaussians (N,) bool on triangles that stretch as it opens
    (mouth_interior.stretched_faces)). neutral: (V, 3) the avatar's mesh at rest; mouth: (N,)
    bool, the mouth's own regions, which the curtain excludes."""
    data = model.data
    opened = _opened_mesh(avatar, model)
    with torch.no_grad():
        opened_means = deform(avatar, opened, model.faces).means.double().numpy()
        normals = face_frames(neutral, model.faces)[0][:, :, 1].double().numpy()
    faces = model.faces.numpy()
    rest = neutral.double().numpy()
    on = avatar.face.numpy()
    stretched = stretched_faces(rest, opened.double().numpy(), faces)[on]
    ids = np.asarray(data.lmk_mediapipe if data.lmk_mediapipe is not None else [], np.int64)
    corner_rows = [int(np.flatnonzero(ids == c)[0]) for c in MOUTH_CORNERS if (ids == c).any()]
    if len(corner_rows) < 2:
        none = np.zeros(len(mouth), bool)
        return none, none, opened_means, stretched
    corners = rest[faces[data.lmk_faces[corner_rows]]].mean(1)
    curtain = lip_curtain(rest, opened.double().numpy(), faces, float(np.abs(corners[:, 0]).mean()))[on] & ~mouth
    return curtain, curtain & (normals[on][:, 2] > FACING_Z), opened_means, stretched


def open_mouth_inside(avatar: GaussianAvatar, data: HeadModelData) -> None:
    """In place, on an avatar with closed lips and no portrait behind it (the bundled default
    avatar): the lip curtain shows an open mouth seen from the front where it only shows when
    the jaw opens, and its forward-facing part keeps its lip colours, thinned. The head model's
    own lip colours there stretched over an opened mouth as a red membrane hiding teeth and
    cavity (a puppeteered grin read as a smear).
    It is not drawn as build_avatar draws a closed-lipped portrait's mouth (the curtain shrunk,
    shrink_curtain; the lips closed by the lining, close_lips_with_lining), though that looks
    more like an open mouth: the tracker is calibrated on this avatar's renders, and MediaPipe
    read such renders worse (bench puppet, recalibrated: other people's clips 22 -> 20 of 24
    signals at 0.85, mean correlation 0.917 -> 0.912; the curtain shrunk alone, frown_turn's
    mouth width 0.80 -> 0.70)."""
    model = HeadModel(data)
    labels, names = data.face_regions()
    mouth = np.isin(labels[avatar.face.numpy()], [names.index(n) for n in MOUTH_REGIONS if n in names])
    with torch.no_grad():
        neutral = model(shape=avatar.shape[None], static_offset=avatar.static_offset).vertices[0]
    curtain, facing, opened, _ = _lip_curtain(avatar, model, neutral, mouth)
    if not curtain.any():
        return
    colour = np.zeros((len(curtain), 3))
    colour[curtain] = curtain_colours(opened[curtain], facing[curtain])
    inside = torch.as_tensor(curtain & ~facing)
    avatar.sh[inside, 0] = rgb_to_sh0(torch.as_tensor(colour[inside.numpy()], dtype=torch.float32))
    avatar.opacity_logit[torch.as_tensor(facing)] = LIP_LINE_LOGIT
    with torch.no_grad():
        positions = deform(avatar, neutral, model.faces).means.double().numpy()
    avatar.opacity_logit[torch.as_tensor(curtain_sides(positions, curtain, facing))] = HIDDEN_LOGIT


def curtain_sides(positions: np.ndarray, curtain: np.ndarray, facing: np.ndarray) -> np.ndarray:
    """(N,) bool: the lip curtain's inside Gaussians (curtain and not facing, (N,) bool each)
    towards the mouth's corners, beyond CURTAIN_SIDES of the curtain's half width (positions
    (N, 3) at rest). A smile stretches the corners' triangles as far as an opened jaw does, and
    their Gaussians, drawn as an open mouth's dark inside, grew into dark smears beside the lips of
    every grin. Hidden, an opened mouth shows the cavity's lining at its corners instead."""
    inside = curtain & ~facing
    if not inside.any():
        return inside
    half = float(np.abs(positions[curtain, 0]).max())
    return inside & (np.abs(positions[:, 0]) > CURTAIN_SIDES * half)


def shrink_curtain(avatar: GaussianAvatar, model: HeadModel, inside: np.ndarray) -> None:
    """In place: the lip curtain's inside Gaussians (inside: (N,) bool, the ones drawn as an open
    mouth) made no larger, with the jaw opened by JAW_PROBE, than it takes them to cover the opened
    curtain between them, and no smaller than CURTAIN_SIZE. Bound to triangles that stretch many
    times over as the jaw opens, they grow with them (a face's scale is its base edge and height):
    the few drawn as upper teeth grew into a white blob, with a drip hanging into the dark cavity."""
    if not inside.any():
        return
    verts = _opened_mesh(avatar, model)
    with torch.no_grad():
        size = deform(avatar, verts, model.faces).scales.max(1).values.double().numpy()[inside]
    faces = np.unique(avatar.face.numpy()[inside])
    area = float(face_areas(verts.double().numpy(), model.faces.numpy()[faces]).sum())
    cap = max(CURTAIN_SIZE, CURTAIN_COVER * float(np.sqrt(area / inside.sum() / np.pi)))
    shrink = np.log(np.minimum(1.0, cap / np.maximum(size, 1e-12)))
    avatar.log_scale[torch.as_tensor(inside)] += torch.as_tensor(shrink, dtype=torch.float32)[:, None]


def _nearest_mean(positions: np.ndarray, colour: np.ndarray, donors: np.ndarray, points: np.ndarray,
                  k: int = 8) -> np.ndarray:
    """(M, 3) the mean colour of the k donors ((N,) bool over positions (N, 3), colour (N, 3))
    nearest each of points (M, 3)."""
    idx = np.flatnonzero(donors)
    if not len(idx) or not len(points):
        return np.zeros((len(points), 3))
    _, near = cKDTree(positions[idx]).query(points, k=min(k, len(idx)))
    return colour[idx[np.atleast_2d(near.T).T]].mean(1)


def close_lips_with_lining(avatar: GaussianAvatar, model: HeadModel, neutral: torch.Tensor, positions: np.ndarray,
                           stretched: np.ndarray, meeting: np.ndarray, face_region: np.ndarray, names: list[str],
                           lips: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """In place: the cavity's lining in front of the teeth (Gaussians of the mouth cavity on
    stretched (N,) bool triangles, positions (N, 3) at rest on the neutral mesh (V, 3)) hidden,
    and some of it closing the lips at rest (_close_lips) where meeting (N,) bool Gaussians (the
    lip curtain's front) are; lips: the (upper, lower) lips' faces (_lip_faces). Returns (the
    lining's indices used, the meeting Gaussians' indices they took the place of), both (M,);
    empty without teeth in the head model.

    A real mouth's lining lies against the teeth, never in front of them: stretched across the
    opening when the jaw opens it drew dark streaks over the teeth."""
    none = np.zeros(0, np.int64)
    region = face_region[avatar.face.numpy()]
    teeth = [i for n in ("upper_teeth", "lower_teeth") for i in model.data.vertex_regions.get(n, [])]
    if not teeth or "mouth_cavity" not in names:
        return none, none
    lining = (region == names.index("mouth_cavity")) & stretched & (positions[:, 2] > float(neutral[teeth, 2].min()))
    avatar.opacity_logit[torch.as_tensor(lining)] = HIDDEN_LOGIT
    meet = np.flatnonzero(meeting)
    line = _close_lips(avatar, model, neutral, np.flatnonzero(lining), meet, *lips)
    return line, meet[:len(line)]


def _close_lips(avatar: GaussianAvatar, model: HeadModel, neutral: torch.Tensor, spare: np.ndarray,
                meeting: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """In place: Gaussians spare (indices, hidden ones) take the place, size and opacity at rest
    of the Gaussians meeting (indices: where the lips meet on the neutral mesh neutral (V, 3)),
    bound to the nearest of the upper lip's faces upper or of the lower lip's lower (by how much
    the place moves with the jaw). Returns the indices of spare used, paired with meeting's in
    order.

    The closing Gaussians part with the lips when the jaw opens (thin rims under the upper lip and
    over the lower one) instead of stretching over the opening as the curtain's do."""
    used = np.asarray(spare[:len(meeting)], np.int64)
    if not len(used):
        return used
    meeting = meeting[:len(used)]
    faces = model.faces.numpy()
    rest = neutral.double().numpy()
    jaw_weight = np.asarray(model.data.lbs_weights, np.float64)[:, JAW_JOINT]
    if not len(upper) or not len(lower):
        return used[:0]
    with torch.no_grad():
        at_rest = deform(avatar, neutral, model.faces)
    means = at_rest.means[meeting].double()
    corners = faces[avatar.face.numpy()[meeting]]
    share = jaw_share(means.numpy(), rest[corners], jaw_weight[corners])
    centres = rest[faces].mean(1)
    target = teeth_anchors(means.numpy(), share, upper, centres[upper], lower, centres[lower])
    rebind(avatar, used, target, neutral, model.faces, means, at_rest.quats[meeting], at_rest.scales[meeting])
    avatar.opacity_logit[torch.as_tensor(used)] = avatar.opacity_logit[torch.as_tensor(meeting)]
    return used


def _lip_faces(avatar: GaussianAvatar, model: HeadModel, rest: np.ndarray, face_region: np.ndarray,
               names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower): the faces of the upper and the lower lip, neither the mouth's inside nor
    stretched open with the jaw, split by how much they move with it; rest (V, 3) the neutral
    mesh, face_region (F,) each face's region index into names."""
    faces = model.faces.numpy()
    inside = np.isin(face_region, [names.index(n) for n in MOUTH_REGIONS if n in names])
    lips = ~inside & ~stretched_faces(rest, _opened_mesh(avatar, model).double().numpy(), faces)
    jaw_weight = np.asarray(model.data.lbs_weights, np.float64)[:, JAW_JOINT]
    with_jaw = jaw_weight[faces].mean(1) >= LOWER_SHARE
    return np.flatnonzero(lips & ~with_jaw), np.flatnonzero(lips & with_jaw)


def _pin(avatar: GaussianAvatar, model: HeadModel, sources: Sequence[SourceResult], views: np.ndarray,
         pinned: np.ndarray, upper: np.ndarray, lower: np.ndarray, behind: bool) -> None:
    """Bind the Gaussians pinned (N,) bool to the nearest of the faces upper (U,) or lower (L,),
    in place, each where it is in the pose of the source that saw it best (views: (S, N), the
    larger the better the view, sources in the same order), turned into discs facing that
    source's camera. behind: upper or lower by how much each moves with the jaw
    (parted_mouth.teeth_anchors), and moved along the line of sight to its new face's depth
    (grown to look the same from there); else the nearest face of either."""
    if not len(upper) or not len(lower):
        return
    faces = model.faces.numpy()
    jaw_weight = np.asarray(model.data.lbs_weights, np.float64)[:, JAW_JOINT]
    owner = np.argmax(views, 0)
    for i, src in enumerate(sources):
        idx = np.flatnonzero(pinned & (owner == i))
        if not len(idx):
            continue
        f = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
        with torch.no_grad():
            verts = model(shape=avatar.shape[None], expr=f(src.expr), pose=f(src.pose), translation=f(src.translation),
                          static_offset=avatar.static_offset).vertices[0]
            g = deform(avatar, verts, model.faces)
        means = g.means.double().numpy()[idx]
        v = verts.double().numpy()
        corners = faces[avatar.face.numpy()[idx]]
        centres = v[faces].mean(1)
        if behind:
            share = jaw_share(means, v[corners], jaw_weight[corners])
            target = teeth_anchors(means, share, upper, centres[upper], lower, centres[lower])
        else:
            # On the lips: the nearer lip. Between the lips, where the curtain lies, the jaw's
            # share is about a half either way, and a Gaussian given to the farther lip hung in
            # the opening as it opened.
            either = np.concatenate([upper, lower])
            target = either[cKDTree(centres[either]).query(means)[1]]
        quats, scales = facing_discs(g.means[idx], g.quats[idx], g.scales[idx], torch.zeros(3))
        moved = g.means[idx]
        if behind:
            # The source's camera is at the tracking world's origin: each Gaussian moves along its
            # line of sight to its new face's depth.
            sight = g.means[idx].double() / torch.linalg.vector_norm(g.means[idx].double(), dim=1, keepdim=True)
            depth = (torch.as_tensor(centres[target]) * sight).sum(1)
            moved, scales = behind_lips(g.means[idx], scales, depth)
        rebind(avatar, idx, target, verts, model.faces, moved, quats, scales)


def _pin_teeth(avatar: GaussianAvatar, model: HeadModel, sources: Sequence[SourceResult], views: np.ndarray,
               pinned: np.ndarray, face_region: np.ndarray, names: list[str]) -> None:
    """Bind the Gaussians pinned (N,) bool (the lip curtain's, seen in a portrait's opening) to the
    teeth (parted_mouth), in place, behind the lips where the source that saw each best saw it
    (_pin). face_region: (F,) each face's region index into names."""
    upper = np.flatnonzero(face_region == names.index("upper_teeth")) if "upper_teeth" in names else []
    lower = np.flatnonzero(face_region == names.index("lower_teeth")) if "lower_teeth" in names else []
    _pin(avatar, model, sources, views, pinned, np.asarray(upper), np.asarray(lower), behind=True)


def build_avatar(sources: Sequence[str | Path | np.ndarray], count: int = 60000,
                 progress: Callable[[float, str], None] | None = None,
                 cancel: threading.Event | None = None, data: HeadModelData | None = None,
                 seed: int = 0, sharpen: bool = True) -> tuple[GaussianAvatar, list[SourceResult]]:
    """Portraits (file paths or (H, W, 3) RGB arrays, any number, any order) -> (avatar of
    `count` Gaussians on the open head model, one SourceResult per input in input order).

    progress(fraction in [0, 1], stage name) is called between stages; setting cancel stops at
    the next check with BuildCancelled. Raises BuildError when no input is usable. sharpen: fit
    the colours to the sources afterwards (colour_fit; most of the build's time).
    """
    from savatar.core.drive.face_landmarks import FaceLandmarker

    if data is None:
        from savatar.core.head.open_head import load_open_head_data
        data = load_open_head_data()

    def step(fraction: float, stage: str) -> None:
        if cancel is not None and cancel.is_set():
            raise BuildCancelled("build cancelled")
        if progress is not None:
            progress(fraction, stage)

    step(0.0, "landmarks")
    with FaceLandmarker(static_images=True, max_faces=4) as landmarker:
        results, thumbs = check_sources(list(sources), landmarker)
    good = [r for r in results if r.ok]
    if not good:
        detail = "; ".join(r.line() for r in results) or "no input given"
        raise BuildError(f"no usable portrait: {detail}")
    step(0.2, "fit")
    shape = fit_identity(data, good, check=lambda: step(0.2, "fit"))
    step(0.45, "segmentation")
    person_masks(good)
    step(0.5, "hair volume")
    offset = hair_offsets(data, shape, good) + landmark_offsets(data, shape, good)
    step(0.55, "layout")
    # The face holds who the person is: 4.5 there rather than 3 scored better with the same count
    # (dlib's identity at +-45 and +-60 degrees, the one-shot PSNR).
    density = {"face": 4.5, "left_eyeball": 1.0, "right_eyeball": 1.0, "mouth_cavity": 0.5,
               "upper_teeth": 1.0, "lower_teeth": 1.0, "scalp": 1.0, "neck": 0.7, "eye_socket": 0.3,
               **FEATURE_DENSITY}
    avatar = init_avatar(feature_regions(data), count, seed=seed, region_density=density)
    avatar.shape = torch.as_tensor(shape, dtype=torch.float32)
    avatar.static_offset = torch.as_tensor(offset, dtype=torch.float32)
    model = HeadModel(data)
    default = sh0_to_rgb(avatar.sh[:, 0].double()).numpy().clip(0, 1)
    acc_c = np.zeros((count, 3))
    acc_w = np.zeros(count)
    labels, names = data.face_regions()
    region = labels[avatar.face.numpy()]
    in_regions = lambda *ns: np.isin(region, [names.index(n) for n in ns if n in names])  # noqa: E731
    mouth = in_regions(*MOUTH_REGIONS)
    with torch.no_grad():
        neutral = model(shape=avatar.shape[None], static_offset=avatar.static_offset).vertices[0]
        positions = deform(avatar, neutral, model.faces).means.double().numpy()
    curtain, facing, opened, stretched = _lip_curtain(avatar, model, neutral, mouth)
    rest_mesh = neutral.double().numpy()
    cheeks = cheek_sides(positions, region, names, rest_mesh, data)
    views = []
    # A plain sum of weighted colours: the same for any order of the sources.
    for i, src in enumerate(good):
        step(0.6 + 0.05 * i / len(good), "colour")
        c, w, v, in_opening, in_face = lift_colours(avatar, model, src)
        # The cheeks and jaw beyond the portrait's face contour: what a frontal portrait shows
        # there is hair, collar or background beside the face (and the contour's shadow), which
        # painted the sides of the face with stripes when turned. They are filled from the skin.
        w = np.where(cheeks & ~in_face, 0.0, w)
        # Lips, chin or cheek seen inside a portrait's parted lips: the head mesh opens less than
        # the person did there (a wide smile's corners), and its teeth would be painted onto the
        # skin around the mouth. The mouth's own Gaussians (inside, curtain) take those pixels.
        w = np.where(in_opening & ~(mouth | curtain), 0.0, w)
        acc_c += w[:, None] * c
        acc_w += w
        # The best view of a Gaussian: a visible one, the least grazing of them; between views
        # alike (grazing ones weigh 0), the widest open mouth, so the order of the sources does not
        # matter.
        views.append(v + w + 1e-6 * lips_gap(src.landmarks))
    step(0.65, "fill")
    seen = acc_w > MIN_SEEN_WEIGHT
    colour = np.where(seen[:, None], acc_c / np.maximum(acc_w, 1e-12)[:, None], default)
    default[mouth] = mouth_interior_colours(positions, in_regions("upper_teeth", "lower_teeth"),
                                            in_regions("mouth_cavity"), stretched)[mouth]
    closed = all(lips_closed(src.landmarks) for src in good)
    # The lips close at rest with Gaussians that part with them, not with the curtain's front,
    # which stretches over the opening as the rest of the curtain does: with a portrait's teeth
    # behind the parted lips (without, a band of teeth showed between the lips at rest), or drawn
    # as an open mouth where every portrait's lips are closed (kept in the lip line's colours, it
    # stretched over the lower half of an opened mouth as a red smear).
    lips = _lip_faces(avatar, model, rest_mesh, labels, names)
    line, met = close_lips_with_lining(avatar, model, neutral, positions, stretched, curtain & facing, labels, names,
                                       lips)
    default[line] = LIP_LINE_SHADE * _nearest_mean(positions, colour, seen & ~curtain & ~mouth, positions[met])
    acc_w[line] = 0.0
    view = np.stack(views)
    pinned = curtain & (view >= 1.0).any(0)
    if closed:
        # A closed-lipped portrait saw the lips' line itself where they meet.
        saw = seen[met]
        default[line[saw]] = colour[met[saw]]
        # The fit of closed lips often opens the jaw a little (the head model's lips are fuller
        # than most): what a portrait saw of the curtain there is its lips. Those Gaussians keep
        # its colours and move to the lips, so the source view shows them and an opening mouth
        # parts them with the lips (left on the curtain, they stretched over the opening as a
        # red smear; drawn as the open mouth, the source view showed teeth between closed lips).
        _pin(avatar, model, good, view, pinned, *lips, behind=False)
        # The rest of the curtain shows the inside of an open mouth.
        drawn = curtain & ~pinned
        default[drawn] = curtain_colours(opened[curtain], facing[curtain])[~pinned[curtain]]
        # Without a lining to close the lips with, what faces forwards keeps the lip line.
        acc_w[drawn if len(line) else drawn & ~facing] = 0.0
        # Thin: stacked in the closed lips' line they do not darken it, stretched over an open
        # mouth the teeth and cavity behind show through.
        avatar.opacity_logit[torch.as_tensor(facing & ~pinned)] = LIP_LINE_LOGIT
        sides = curtain_sides(positions, curtain, facing) & ~pinned
        avatar.opacity_logit[torch.as_tensor(sides)] = HIDDEN_LOGIT
        shrink_curtain(avatar, model, drawn & ~facing & ~sides)
        mouth |= drawn
    else:
        # A portrait with parted lips saw its own mouth on the curtain: the Gaussians it saw there
        # keep their colours and move to the teeth, where a wider mouth shows them at their own
        # size (parted_mouth); the rest of the curtain, hidden behind the lips, is the dark cavity
        # between them.
        _pin_teeth(avatar, model, good, view, pinned, labels, names)
        hollow = curtain & ~pinned
        default[hollow] = CAVITY
        acc_w[hollow] = 0.0
        mouth |= hollow
        # Grown with the opening jaw, the cavity's dark discs covered the teeth behind them.
        shrink_curtain(avatar, model, hollow)
    hair = hair_colour(good)
    trusted = acc_w > TRUSTED_WEIGHT
    # Groups: 0 the face, 1 the cranium (settles to the hair's colour), 2 the neck below the jaw's
    # angles (the back of the neck: skin under short hair, hair where it falls past the jaw).
    group = in_regions("scalp").astype(np.int64)
    nape = _landmark_level(rest_mesh, data, JAW_ANGLES, 1)
    if nape is not None:
        group[(group == 1) & (positions[:, 1] < nape)] = 2
    settle = {} if hair is None else {1: hair}
    skin = cheeks & trusted & ~mouth
    if long_hair(good, hair):
        settle[2] = hair
    elif skin.any():
        neck = group == 2
        settle[2] = ring_colours(positions, colour, neck & trusted & ~mouth, neck, np.median(colour[skin], axis=0))
    # The cheeks' sides are not mirrored: what the other side's showed there (a strand of hair, its
    # shadow) came over as a dark smudge in front of the ear; they fill from their own side's skin.
    filled = fill_unseen(positions, colour, trusted, mouth, default, group=group, settle=settle, mirror=~cheeks)
    _, nb = cKDTree(positions).query(positions, k=min(FEATHER_NEIGHBOURS, len(positions)))
    nb = np.atleast_2d(nb.T).T
    trust = _feathered(nb, np.clip((acc_w - MIN_SEEN_WEIGHT) / (TRUSTED_WEIGHT - MIN_SEEN_WEIGHT), 0.0, 1.0))
    # The filled colours blurred across the groups' border too: the border follows the mesh's
    # triangles, and skin filled on one side next to hair on the other drew it as a jagged line.
    for _ in range(FEATHER_PASSES):
        filled[~mouth] = filled[nb[~mouth]].mean(1)
    colour = trust[:, None] * colour + (1.0 - trust[:, None]) * filled
    avatar.sh[:, 0] = rgb_to_sh0(torch.as_tensor(colour.clip(0, 1), dtype=torch.float32))
    avatar.default_expr = torch.zeros(data.exprdirs.shape[2])
    avatar.metadata["thumbnails"] = np.stack(thumbs)
    avatar.metadata["build"] = {"seen_fraction": float(seen.mean()), "sources": len(good)}
    step(0.7, "sources")
    # What `savatar refine --sources` needs, kept in the avatar file (savatar.core.io.avatar_file).
    avatar.metadata["sources"] = stored_sources(good, data, shape, static_offset=offset)
    if sharpen:
        sharp = np.clip((acc_w - MIN_SEEN_WEIGHT) / (SHARPEN_WEIGHT - MIN_SEEN_WEIGHT), 0.0, 1.0)
        # The mouth's inside and the lip curtain hold colours placed (teeth, cavity) or moved
        # (parted_mouth) where the mesh is not where the portrait's pixels were: fitted to the
        # source view, they paint teeth on the cheeks of a turned head.
        sharp[mouth | curtain] = 0.0
        sharp = _feathered(nb, sharp)
        fit_colours(avatar, model, [View.from_record(r) for r in avatar.metadata["sources"]], sharp,
                    check=lambda done: step(0.72 + 0.26 * done, "sharpen"))
    step(1.0, "done")
    return avatar, results


def relabel_sources(avatar: GaussianAvatar, results: Sequence[SourceResult], labels: Sequence[str | None]) -> None:
    """Name array sources (build_avatar calls input n "image n", from 1) labels[n - 1] instead, in
    the results and the avatar's stored sources; None keeps the name."""
    names = {f"image {n + 1}": label for n, label in enumerate(labels) if label is not None}
    for r in results:
        r.name = names.get(r.name, r.name)
    for rec in avatar.metadata.get("sources") or []:
        rec["name"] = names.get(str(rec["name"]), str(rec["name"]))


def stored_sources(results: Sequence[SourceResult], data, shape: np.ndarray,
                   size: int = SOURCE_SIDE, static_offset: np.ndarray | None = None) -> list[dict]:
    """A build's usable sources as the records avatar files keep for refinement
    (avatar.metadata["sources"]): face crops of at most size pixels, their fitted head
    parameters and camera, and HeadMasker's loss mask from the build's person segmentation
    (with the avatar's static offset, e.g. its hair volume)."""
    masker = HeadMasker(data, shape, static_offset)
    return [prepare_view(r.name, to_uint8(r.image), r.K, r.landmarks, r.expr, r.pose, r.translation, masker, size,
                         person=r.mask).record()
            for r in results if r.ok and r.image is not None]

"""Where refinement frames (savatar.core.refine.refine.Frame) come from: a ground-truth rig
rendered along a motion (tests, benches), a folder of images with their head parameters, a video,
or the portraits an avatar was built from."""
from __future__ import annotations

import math
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.io.pixels import to_uint8
from savatar.core.refine.refine import Frame
from savatar.core.render.api import render
from savatar.core.render.camera import REAL_FOV_Y_DEG

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def frames_from_motion(rig_gt, expr: np.ndarray, pose: np.ndarray, translation: np.ndarray, cameras: Sequence,
                       backend: str = "cpu", background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> list[Frame]:
    """Render training frames from a ground-truth Rig. expr: (T, E); pose: (T, 15);
    translation: (T, 3); frame t is seen by cameras[t % len(cameras)]
    (savatar.core.render.camera.Camera)."""
    bg = torch.tensor(background, dtype=torch.float32)
    frames = []
    for t in range(len(expr)):
        cam = cameras[t % len(cameras)]
        vm = torch.tensor(cam.viewmat, dtype=torch.float32)
        K = torch.tensor(cam.K, dtype=torch.float32)
        with torch.no_grad():
            img = render(rig_gt.world(expr[t], pose[t], translation[t]), vm, K, cam.width, cam.height, bg,
                         backend=backend).rgb.clamp(0, 1).cpu()
        frames.append(Frame(img, torch.as_tensor(np.asarray(expr[t], np.float32)),
                            torch.as_tensor(np.asarray(pose[t], np.float32)),
                            torch.as_tensor(np.asarray(translation[t], np.float32)), vm, K))
    return frames


def frames_from_images(directory: str | Path) -> list[Frame]:
    """Frames from a folder: images plus `params.npz` holding
    - `files` (T,) image file names in the folder (default: the sorted .png/.jpg files),
    - `expr` (T, E), `pose` (T, 15), `translation` (T, 3) head parameters,
    - `viewmat` (4, 4) or (T, 4, 4) world-to-camera (OpenCV), `K` (3, 3) or (T, 3, 3) pixels,
    - optional `masks` (T, H, W) in [0, 1].
    Raises ValueError naming what is missing or inconsistent.
    """
    from PIL import Image

    d = Path(directory)
    params = d / "params.npz"
    if not params.is_file():
        raise ValueError(f"{d}: no params.npz (expr, pose, translation, viewmat, K)")
    with np.load(params, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    for k in ("expr", "pose", "translation", "viewmat", "K"):
        if k not in data:
            raise ValueError(f"{params}: missing array {k!r}")
    files = [str(x) for x in data["files"]] if "files" in data else sorted(
        p.name for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    t = len(files)
    if t == 0:
        raise ValueError(f"{d}: no images")
    if len(data["expr"]) != t or data["pose"].shape != (t, 15) or data["translation"].shape != (t, 3):
        raise ValueError(f"{params}: expr, pose (T, 15) and translation (T, 3) must have one row per image ({t})")
    per = lambda a, shape: np.broadcast_to(a, (t,) + shape) if a.shape == shape else a  # noqa: E731
    vms, Ks = per(data["viewmat"], (4, 4)), per(data["K"], (3, 3))
    if vms.shape != (t, 4, 4) or Ks.shape != (t, 3, 3):
        raise ValueError(f"{params}: viewmat must be (4, 4) or (T, 4, 4) and K (3, 3) or (T, 3, 3)")
    frames = []
    for i, name in enumerate(files):
        path = d / name
        if not path.is_file():
            raise ValueError(f"{path}: listed in params.npz but missing")
        img = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        mask = torch.from_numpy(np.asarray(data["masks"][i], np.float32)) if "masks" in data else None
        f32 = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
        frames.append(Frame(torch.from_numpy(img), f32(data["expr"][i]), f32(data["pose"][i]),
                            f32(data["translation"][i]), f32(vms[i]), f32(Ks[i]), mask))
    return frames


# --- views prepared for refinement (video frames and stored build sources) ---------------------

VIDEO_SIZE = 384  # longer side of refinement frames from a video or stored sources: a face crop
#                   keeps the face at ~150 px; refinement time on a CPU grows with the pixels
VIDEO_MAX_FRAMES = 200  # 2.4 MB each in memory at 384 px (float32 image and mask): under 0.5 GB
VIDEO_FOV_Y_DEG = REAL_FOV_Y_DEG  # as building and tracking assume
CROP_SCALE = 2.3  # face crop side, in units of the landmark box's larger side (the hair fits in)
CROP_RAISE = 0.15  # crop centre above the landmark box centre, in landmark box heights (hair)
MASK_MARGIN = 0.03  # the head-mesh silhouette is dilated by this fraction of the image side
MIN_CONFIDENCE = 0.1  # tracked video frames fitting worse than this are dropped (FitResult.confidence)


@dataclass
class View:
    """One refinement view before it becomes a Frame: image (H, W, 3) uint8 RGB; mask (H, W)
    uint8, 255 where the pixel counts in the loss; K (3, 3) and viewmat (4, 4) (OpenCV);
    expr (E,), pose (15,), translation (3,) head parameters; name says where it came from."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    viewmat: np.ndarray
    expr: np.ndarray
    pose: np.ndarray
    translation: np.ndarray

    def to_frame(self, size: int | None = None) -> Frame:
        """The view as a Frame, downscaled first when its longer side exceeds size."""
        image, mask, K = self.image, self.mask, np.asarray(self.K, np.float64)
        h, w = image.shape[:2]
        if size is not None and max(h, w) > size:
            s = size / max(h, w)
            ow, oh = max(1, round(w * s)), max(1, round(h * s))
            image = cv2.resize(image, (ow, oh), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (ow, oh), interpolation=cv2.INTER_AREA)
            K = np.diag([ow / w, oh / h, 1.0]) @ K
        f32 = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
        return Frame(f32(image) / 255.0, f32(self.expr), f32(self.pose), f32(self.translation), f32(self.viewmat),
                     f32(K), f32(mask) / 255.0)

    PARAMS = ("K", "viewmat", "expr", "pose", "translation")

    def record(self) -> dict:
        """The plain dict kept in avatar.metadata["sources"] (savatar.core.io.avatar_file)."""
        return {"name": self.name, "image": self.image, "mask": self.mask,
                **{k: np.asarray(getattr(self, k), np.float32) for k in self.PARAMS}}

    @classmethod
    def from_record(cls, rec: dict) -> "View":
        return cls(str(rec["name"]), np.asarray(rec["image"]), np.asarray(rec["mask"]),
                   *(np.asarray(rec[k]) for k in cls.PARAMS))


def face_box(landmarks: np.ndarray, scale: float = CROP_SCALE) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) in pixels around face landmarks (L, 2+): side scale x the larger
    side of their box, centred a little above the box centre (the hair). May reach outside the
    image."""
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    centre = (lo + hi) / 2 - np.array([0.0, CROP_RAISE * (hi[1] - lo[1])])
    side = max(8, int(math.ceil(scale * float((hi - lo).max()))))
    return int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2)), side


def resample(image: np.ndarray, K: np.ndarray, box: tuple[int, int, int, int], out_w: int,
             out_h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop box (x0, y0, w, h) of image (H, W[, C]) (parts outside the image are black) and
    resize it to (out_h, out_w) (area filter). Returns (image, inside (out_h, out_w) float32:
    the fraction of each pixel inside the original image, K of the new pixels).

    Pixel coordinates are continuous with the origin at the image corner (pixel centres at +0.5,
    as in the renderers and MediaPipe), so u' = (u - x0) out_w / w."""
    x0, y0, bw, bh = box
    h, w = image.shape[:2]
    pad = [max(0, -y0), max(0, y0 + bh - h), max(0, -x0), max(0, x0 + bw - w)]
    inside = np.ones((h, w), np.float32)
    if any(pad):
        image = cv2.copyMakeBorder(image, *pad, cv2.BORDER_CONSTANT, value=0)
        inside = cv2.copyMakeBorder(inside, *pad, cv2.BORDER_CONSTANT, value=0)
    ys, xs = y0 + pad[0], x0 + pad[2]
    crop, inside = image[ys:ys + bh, xs:xs + bw], inside[ys:ys + bh, xs:xs + bw]
    if (out_w, out_h) != (bw, bh):
        crop = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA)
        inside = cv2.resize(inside, (out_w, out_h), interpolation=cv2.INTER_AREA)
    sx, sy = out_w / bw, out_h / bh
    k = np.asarray(K, np.float64)
    k2 = np.array([[k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] - x0) * sx],
                   [0.0, k[1, 1] * sy, (k[1, 2] - y0) * sy],
                   [0.0, 0.0, 1.0]])
    return np.ascontiguousarray(crop), inside, k2


class PersonSegmenter:
    """MediaPipe selfie segmentation (in the wheel): RGB uint8 (H, W, 3) -> person probability
    (H, W) float32."""

    def __init__(self):
        import mediapipe as mp

        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        m = self._seg.process(np.ascontiguousarray(image)).segmentation_mask
        return np.zeros(image.shape[:2], np.float32) if m is None else np.asarray(m, np.float32)

    def close(self) -> None:
        self._seg.close()


class HeadMasker:
    """Loss masks for views of one avatar's head: person probability x the head mesh's
    silhouette, dilated by MASK_MARGIN of the image side.

    Why both: the person segmentation alone keeps the neck, shoulders and body, which the avatar
    (a head) can never draw, so their error would only push Gaussians to stretch; the silhouette
    alone keeps background pixels inside the head's outline wherever the real head is smaller
    (the refiner renders on its own background colour, so they could not be matched either).
    The margin lets refinement grow the outline a little, e.g. hair beyond the scalp mesh. The
    mesh, not a Gaussian render, gives the silhouette: the Gaussians sit on its faces, and
    rasterizing it costs milliseconds where a CPU splat render costs seconds."""

    def __init__(self, data, shape: np.ndarray | torch.Tensor | None = None,
                 static_offset: np.ndarray | torch.Tensor | None = None):
        from savatar.core.head.head_model import HeadModel

        self.model = HeadModel(data)
        self.faces = np.asarray(data.faces, np.int64)
        t = lambda a: None if a is None else torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        self.shape, self.static_offset = t(shape), t(static_offset)

    def silhouette(self, expr, pose, translation, viewmat: np.ndarray, K: np.ndarray, width: int,
                   height: int) -> np.ndarray:
        """(H, W) bool: pixels whose centre the posed head mesh covers (triangles with a vertex
        behind the camera are skipped)."""
        f = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
        with torch.no_grad():
            verts = self.model(shape=None if self.shape is None else self.shape[None], expr=f(expr), pose=f(pose),
                               translation=f(translation), static_offset=self.static_offset).vertices[0]
        vm, k = np.asarray(viewmat, np.float64), np.asarray(K, np.float64)
        cam = verts.double().numpy() @ vm[:3, :3].T + vm[:3, 3]
        z = np.maximum(cam[:, 2], 1e-6)
        uv = np.stack([(k[0, 0] * cam[:, 0] + k[0, 1] * cam[:, 1]) / z + k[0, 2], k[1, 1] * cam[:, 1] / z + k[1, 2]], 1)
        tri = self.faces[(cam[:, 2] > 1e-3)[self.faces].all(1)]
        # Fixed point with 4 fractional bits; OpenCV samples pixel (i, j) at (i, j), the renderers'
        # pixel centres are at +0.5. One convex fill per triangle: a single fillPoly of all of them
        # would fill overlaps even-odd.
        pts = np.round((uv[tri] - 0.5) * 16).astype(np.int32)
        out = np.zeros((height, width), np.uint8)
        for p in pts:
            cv2.fillConvexPoly(out, p, 1, lineType=cv2.LINE_8, shift=4)
        return out.astype(bool)

    def __call__(self, person: np.ndarray, expr, pose, translation, viewmat: np.ndarray,
                 K: np.ndarray) -> np.ndarray:
        """(H, W) float32 loss mask for a view whose person probability is person (H, W)."""
        h, w = person.shape
        sil = self.silhouette(expr, pose, translation, viewmat, K, w, h).astype(np.uint8)
        r = max(1, round(MASK_MARGIN * max(h, w)))
        sil = cv2.dilate(sil, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        return person * sil


def prepare_view(name: str, image: np.ndarray, K: np.ndarray, landmarks: np.ndarray, expr, pose, translation,
                 masker: HeadMasker, size: int, crop: bool = True, person: np.ndarray | None = None,
                 segmenter: PersonSegmenter | None = None) -> View:
    """A tracked image (RGB uint8, seen by TRACKING_VIEWMAT and K with the head at expr, pose,
    translation) as a View of at most size pixels a side: with crop, the square face_box around
    the landmarks (never upscaled), else the whole image downscaled. The person probability is
    person (H, W) of the full image cropped alike, or (person None) segmenter's on the prepared
    view."""
    from savatar.core.drive.tracking import TRACKING_VIEWMAT

    h, w = image.shape[:2]
    if crop:
        x0, y0, side = face_box(landmarks)
        out = min(size, side)
        box, out_w, out_h = (x0, y0, side, side), out, out
    else:
        s = min(1.0, size / max(h, w))
        box, out_w, out_h = (0, 0, w, h), max(1, round(w * s)), max(1, round(h * s))
    img, inside, k = resample(image, K, box, out_w, out_h)
    if person is not None:
        person = resample(np.asarray(person, np.float32), K, box, out_w, out_h)[0]
    else:
        person = segmenter(img)
    mask = masker(np.clip(person, 0.0, 1.0) * inside, expr, pose, translation, TRACKING_VIEWMAT, k)
    f = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return View(name, img, to_uint8(mask), k, TRACKING_VIEWMAT.astype(np.float32), f(expr), f(pose), f(translation))


def frames_from_video(path: str | Path, avatar: GaussianAvatar, data=None, size: int = VIDEO_SIZE,
                      max_frames: int = VIDEO_MAX_FRAMES, stride: int | None = None,
                      fov_y_deg: float = VIDEO_FOV_Y_DEG, crop: bool = True,
                      min_confidence: float = MIN_CONFIDENCE, stop: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> list[Frame]:
    """Refinement frames from a monocular video of the avatar's person.

    Every stride-th frame before frame stop (default: the whole clip; spread over it so at most
    max_frames are used) is
    tracked (savatar.core.drive.tracking.FaceTracker, no smoothing) with the avatar's own identity
    (shape and static offset), so the avatar posed with the tracked expr, pose and translation
    lines up with the frame. The camera is the tracker's (and the build's): viewmat
    TRACKING_VIEWMAT, K = intrinsics_for(W, H, fov_y_deg) of the tracked frame, adjusted for the
    face crop (crop=True) or the downscale (crop=False) to at most size pixels a side. The mask
    is HeadMasker's (person segmentation x dilated head-mesh silhouette). Frames with no face,
    or a fit whose confidence is below min_confidence, are left out.

    data: the avatar's HeadModelData (default: savatar.core.gaussians.rig.head_data_for(avatar)).
    progress(done, total): frames of the file read so far, and its frame count (0 if unknown).
    Raises OSError when the file cannot be read as a video, ValueError when no frame has a face;
    both name the file.
    """
    from savatar.core.drive.tracking import VideoReader, track_identity
    from savatar.core.gaussians.rig import head_data_for

    if size < 16 or max_frames < 1 or (stride is not None and stride < 1):
        raise ValueError("size must be >= 16, max_frames and stride >= 1")
    data = data if data is not None else head_data_for(avatar)
    shape, offset = avatar.shape.detach().numpy(), avatar.static_offset.detach().numpy()
    masker = HeadMasker(data, shape, offset)
    frames: list[Frame] = []
    read = tracked = 0
    with VideoReader(path) as video:
        end = video.count if stop is None else min(stop, video.count or stop)
        if stride is None:
            stride = max(1, math.ceil(end / max_frames)) if end else 1
        segmenter = PersonSegmenter()
        try:
            with closing(track_identity(video, data, shape, offset, fov_y_deg, stride, stop)) as tracked_frames:
                for t in tracked_frames:
                    read, tracked, fit = t.index + 1, tracked + 1, t.fit
                    if fit.status == "ok" and fit.confidence >= min_confidence:
                        view = prepare_view(f"frame {t.index}", t.image, t.K, fit.landmarks, fit.expr, fit.pose,
                                            fit.translation, masker, size, crop, segmenter=segmenter)
                        frames.append(view.to_frame())
                    if progress is not None:
                        progress(read, video.count)
                    if len(frames) >= max_frames:
                        break
        finally:
            segmenter.close()
        if progress is not None and video.count:
            progress(video.count, video.count)
    if read == 0:
        raise OSError(f"{path}: no frame could be decoded (not a video, or damaged)")
    if not frames:
        raise ValueError(f"{path}: no face found in any of the {tracked} frames tracked")
    return frames


def frames_from_stored_sources(avatar: GaussianAvatar, size: int | None = None) -> list[Frame]:
    """The source portraits an avatar file keeps (savatar build stores them, with or without a
    generator) as frames, each downscaled to at most size pixels a side. ValueError when the
    avatar holds none (not built from portraits, or built before sources were kept)."""
    records = avatar.metadata.get("sources") or []
    if not records:
        raise ValueError("this avatar holds no source portraits (only avatars made by `savatar build` "
                         "store them); use --images or --video")
    return [View.from_record(r).to_frame(size) for r in records]

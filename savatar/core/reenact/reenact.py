"""Reenactment: an avatar driven by a video of a face, rendered frame for frame in the tracker's
camera at the video's own frame size, and scored against the real frames.

Two passes over the video: track_clip tracks every frame with the avatar's identity held fixed
(as refinement frames from a video are tracked, so that a self-reenactment lines up), then
reenact renders each frame and scores it (savatar.core.reenact.scores). Frames without a face
hold the last tracked pose (the first one's before any), so the output has the video's frame
count and timing.
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from savatar.core.drive.tracking import TRACKING_VIEWMAT, VideoReader, intrinsics_for, track_identity
from savatar.core.gaussians.gaussians import GaussianAvatar, WorldGaussians
from savatar.core.gaussians.rig import Rig, head_data_for
from savatar.core.io.pixels import to_uint8
from savatar.core.reenact.head_mask import head_mask
from savatar.core.reenact.scores import FrameScores, score_frame
from savatar.core.render.camera import REAL_FOV_Y_DEG, Camera


# draw(world, camera) -> (rgb (H, W, 3) float in [0, 1] on the background, alpha (H, W))
Draw = Callable[[WorldGaussians, Camera], tuple[np.ndarray, np.ndarray]]


@dataclass
class TrackedClip:
    """A video tracked with one identity. indices (T,) the tracked frame numbers; expr (T, E),
    pose (T, 15), translation (T, 3) per tracked frame (held where face is False); landmarks:
    (478, 2) pixels of the full-size frame, None without a face; K (3, 3) the camera of the
    full-size frames (viewmat TRACKING_VIEWMAT); width, height, fps of the video."""

    path: Path
    indices: np.ndarray
    expr: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    face: np.ndarray
    landmarks: list[np.ndarray | None]
    K: np.ndarray
    width: int
    height: int
    fps: float

    def __len__(self) -> int:
        return len(self.indices)

    def camera(self) -> Camera:
        return Camera(TRACKING_VIEWMAT, self.K, self.width, self.height)


def track_clip(path: str | Path, avatar: GaussianAvatar, data=None, fov_y_deg: float = REAL_FOV_Y_DEG,
               stride: int = 1, progress: Callable[[int, int], None] | None = None) -> TrackedClip:
    """Track every stride-th frame of the video at path with avatar's identity (shape and static
    offset). progress(done, total) after each frame (total 0 when the file does not say).
    OSError when the video cannot be read, ValueError when no frame has a face; both name it."""
    data = data if data is not None else head_data_for(avatar)
    shape, offset = avatar.shape.detach().numpy(), avatar.static_offset.detach().numpy()
    indices, fits, marks = [], [], []
    size = None
    with VideoReader(path) as video:
        fps, total = video.fps, video.count
        with closing(track_identity(video, data, shape, offset, fov_y_deg, stride)) as tracked:
            for t in tracked:
                size = t.video_size
                ok = t.fit.status == "ok" and t.fit.landmarks is not None
                indices.append(t.index)
                fits.append(t.fit if ok else None)
                marks.append(np.asarray(t.fit.landmarks, np.float64)[:, :2] / t.scale if ok else None)
                if progress is not None:
                    progress(t.index + 1, total)
    if not indices:
        raise OSError(f"{path}: no frame could be decoded (not a video, or damaged)")
    found = [f for f in fits if f is not None]
    if not found:
        raise ValueError(f"{path}: no face found in any of its {len(indices)} frames")
    # Hold the last pose through faceless frames; before the first face, take the first one's.
    held, rows = found[0], []
    for f in fits:
        held = f or held
        rows.append(held)
    return TrackedClip(Path(path), np.asarray(indices), np.stack([r.expr for r in rows]),
                       np.stack([r.pose for r in rows]), np.stack([r.translation for r in rows]),
                       np.array([f is not None for f in fits]), marks, intrinsics_for(size[0], size[1], fov_y_deg),
                       size[0], size[1], fps)


@dataclass
class ReenactedFrame:
    """One output frame: real (H, W, 3) uint8; render (H, W, 3) float on the background; alpha
    (H, W); mask (H, W) bool head mask of the real frame (None without a face); scores."""

    index: int
    real: np.ndarray
    render: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray | None
    scores: FrameScores


def reenact(clip: TrackedClip, avatar: GaussianAvatar, draw: Draw, background=(1.0, 1.0, 1.0),
            self_reenactment: bool = True, frames: Sequence[int] | None = None,
            rig: Rig | None = None) -> Iterator[ReenactedFrame]:
    """Render avatar posed by each tracked frame of clip (or only those whose position in
    clip.indices is in frames), in the clip's camera at the video's size, and score it against
    the real frame. The head mask comes from the real frame alone (head_mask of its person
    segmentation and tracked landmarks): the avatar plays no part in it."""
    from savatar.core.drive.face_landmarks import FaceLandmarker
    from savatar.core.refine.frame_sources import PersonSegmenter

    rig = rig or Rig.of(avatar)
    wanted = set(range(len(clip)) if frames is None else frames)
    position = {int(i): k for k, i in enumerate(clip.indices)}
    camera = clip.camera()
    segmenter, landmarker = PersonSegmenter(), FaceLandmarker(static_images=False)
    try:
        with VideoReader(clip.path) as video:
            for i, real in video.frames():
                k = position.get(i)
                if k is None or k not in wanted:
                    continue
                if real.shape[:2] != (clip.height, clip.width):
                    raise OSError(f"{clip.path}: frame {i} is {real.shape[1]}x{real.shape[0]}, "
                                  f"the clip started at {clip.width}x{clip.height}")
                rgb, alpha = draw(rig.world(clip.expr[k], clip.pose[k], clip.translation[k]), camera)
                lm_real = clip.landmarks[k]
                mask = head_mask(segmenter(real), lm_real) if lm_real is not None else None
                lm_render = landmarker(to_uint8(rgb)) if lm_real is not None else None
                scores = score_frame(i, real, rgb, alpha, lm_real, lm_render, mask, background, self_reenactment)
                yield ReenactedFrame(i, real, rgb, alpha, mask, scores)
    finally:
        segmenter.close()
        landmarker.close()


def side_by_side(frame: ReenactedFrame, error_gain: float = 4.0) -> np.ndarray:
    """real | avatar | per-pixel error, (H, 3W, 3) uint8, for people to look at. The error is
    the mean absolute RGB difference x error_gain as a heat map inside the real frame's head
    mask (what the scores count); outside it, the real frame dimmed."""
    render = to_uint8(frame.render)
    err = np.abs(frame.real.astype(np.float32) - render.astype(np.float32)).mean(2) * error_gain
    heat = cv2.applyColorMap(np.clip(err, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    if frame.mask is not None:
        heat = np.where(frame.mask[..., None], heat, (frame.real * 0.3).astype(np.uint8))
    return np.concatenate([frame.real, render, heat], axis=1)

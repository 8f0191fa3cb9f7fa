"""How faithfully a rendered frame reproduces the real one, and the summary over a clip.

Self-reenactment scores (the avatar is of the person in the video), all against the head mask of
the real frame (savatar.core.reenact.head_mask):
- psnr_mask: PSNR over the head-mask pixels;
- psnr_crop, ssim_crop: on a square crop around the head (CROP_SCALE x the face landmarks' box,
  resized to CROP_SIDE pixels a side, as the one-shot avatar papers crop), with both images
  matted onto the background by the head mask: the papers' protocol;
- coverage: the fraction of head-mask pixels the avatar draws (alpha > 0.5).
Scores for any pair of faces (also across people): the landmark distance between the real
frame's and the render's face meshes, and the face signals on both
(savatar.core.reenact.face_signals), correlated over the clip.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from savatar.core.reenact.face_signals import SIGNALS, amplitude, correlation, face_signals, landmark_distance
from savatar.core.refine.frame_sources import face_box, resample
from savatar.core.refine.image_metrics import psnr, ssim

CROP_SCALE = 2.2
CROP_SIDE = 512
SELF_SCORES = ("psnr_mask", "psnr_crop", "ssim_crop", "coverage")


@dataclass
class FrameScores:
    """Scores of one frame. face: the real frame has a face (else its pose was held and it has
    no scores); render_face: MediaPipe found the face on the render too. Self-reenactment
    scores are None when not asked for; NaN where they cannot be measured."""

    index: int
    face: bool
    render_face: bool = False
    landmark_distance: float = float("nan")
    signals_real: dict[str, float] = field(default_factory=dict)
    signals_render: dict[str, float] = field(default_factory=dict)
    psnr_mask: float | None = None
    psnr_crop: float | None = None
    ssim_crop: float | None = None
    coverage: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def matted(image: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """image (H, W, 3) float over background (3,) where mask (H, W) in [0, 1] is 0."""
    m = np.asarray(mask, np.float32)[..., None]
    return image * m + background * (1 - m)


def head_crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The square CROP_SIDE crop around the face landmarks (L, 2+) of image (H, W[, C]); parts
    outside the image are zero."""
    x0, y0, side = face_box(landmarks, CROP_SCALE)
    return resample(np.asarray(image, np.float32), np.eye(3), (x0, y0, side, side), CROP_SIDE, CROP_SIDE)[0]


def score_frame(index: int, real: np.ndarray, render: np.ndarray, alpha: np.ndarray,
                lm_real: np.ndarray | None, lm_render: np.ndarray | None, mask: np.ndarray | None,
                background=(1.0, 1.0, 1.0), self_reenactment: bool = True) -> FrameScores:
    """real: (H, W, 3) uint8 frame; render: (H, W, 3) float in [0, 1] on background; alpha (H, W);
    lm_real / lm_render: (L, 2+) face-mesh pixels or None; mask: the real frame's head mask
    (H, W) bool (None without a face)."""
    if lm_real is None or mask is None:
        return FrameScores(index, face=False)
    out = FrameScores(index, face=True, render_face=lm_render is not None, signals_real=face_signals(lm_real))
    if lm_render is not None:
        out.landmark_distance = landmark_distance(lm_real, lm_render)
        out.signals_render = face_signals(lm_render)
    if self_reenactment:
        real_f = real.astype(np.float32) / 255.0
        bg = np.asarray(background, np.float32)
        out.psnr_mask = psnr(render, real_f, mask)
        out.coverage = float((alpha[mask] > 0.5).mean()) if mask.any() else float("nan")
        m = head_crop(mask.astype(np.float32), lm_real)
        a, b = (matted(head_crop(x, lm_real), m, bg) for x in (render, real_f))
        out.psnr_crop = psnr(a, b)
        out.ssim_crop = float(ssim(torch.from_numpy(a), torch.from_numpy(b)))
    return out


def _mean(values) -> float:
    v = np.asarray([x for x in values if x is not None], np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def summarize(scores: list[FrameScores]) -> dict:
    """Clip summary: frame counts (frames without a face listed), the mean of every score over
    the frames that have it, and each signal's correlation between the real and rendered faces
    over the frames where both have one, and its amplitude (face_signals.amplitude)."""
    faced = [s for s in scores if s.face]
    both = [s for s in faced if s.render_face]
    summary: dict = {"frames": len(scores), "frames_with_face": len(faced),
                     "frames_without_face": [s.index for s in scores if not s.face],
                     "render_without_face": [s.index for s in faced if not s.render_face],
                     "landmark_distance": _mean(s.landmark_distance for s in both)}
    if any(s.psnr_mask is not None for s in faced):
        for key in SELF_SCORES:
            summary[key] = _mean(getattr(s, key) for s in faced)
    pairs = {k: ([s.signals_real[k] for s in both], [s.signals_render[k] for s in both]) for k in SIGNALS}
    summary["correlation"] = {k: correlation(*pairs[k]) for k in SIGNALS}
    summary["amplitude"] = {k: amplitude(*pairs[k]) for k in SIGNALS}
    finite = [r for r in summary["correlation"].values() if math.isfinite(r)]
    summary["correlation_mean"] = float(np.mean(finite)) if finite else float("nan")
    return summary

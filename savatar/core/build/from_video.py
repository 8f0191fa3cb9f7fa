"""An avatar from a selfie video (issue 16): scan the clip, choose a handful of source frames
(savatar.core.build.source_frames), build from them with the parameter-free pipeline
(savatar.core.build.build.build_avatar). Refining the built avatar against the clip's frames is
the caller's next step (savatar.core.refine.frame_sources.frames_from_video, then the Refiner);
`savatar build --video` does both.

The scan tracks at most SCAN_FRAMES frames spread over the clip with the model's mean identity:
the head angles only need to be roughly right to tell views apart, and each frame's
sharpness, brightness and eye and mouth opening come straight from its landmarks.
"""
from __future__ import annotations

import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from savatar.core.build.build import face_sharpness
from savatar.core.build.source_frames import DEFAULT_SOURCES, Choice, FrameStats, choose_sources, head_angles
from savatar.core.reenact.face_signals import LEFT_EYE, RIGHT_EYE, face_signals
from savatar.core.render.camera import REAL_FOV_Y_DEG

SCAN_FRAMES = 150  # frames looked at to choose from: ~12 ms each (landmarks and a fit)
MIN_CLIP_FRAMES = 10  # fewer decodable frames cannot show a head from several sides


class VideoSourceError(ValueError):
    """The clip cannot give source frames: the message is one line naming the file and why."""


@dataclass
class ClipScan:
    """stats: one FrameStats per scanned frame with a face; scanned: frames looked at; read:
    frames of the clip decoded or skipped up to the end (or stop); fps of the video."""

    path: Path
    stats: list[FrameStats]
    scanned: int
    read: int
    fps: float


def frame_stats(index: int, image: np.ndarray, landmarks: np.ndarray, root: np.ndarray) -> FrameStats:
    """FrameStats of one frame: image (H, W, 3) RGB uint8, landmarks (478, 2+) pixels of it in
    MediaPipe's order, root (3,) the fitted head rotation (axis-angle, tracking world)."""
    lm = np.asarray(landmarks, np.float64)
    yaw, pitch = head_angles(root)
    h, w = image.shape[:2]
    x0, y0 = np.clip(np.floor(lm[:, :2].min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(lm[:, :2].max(0)).astype(int), 0, [w, h])
    box = image[y0:y1, x0:x1]
    brightness = float(cv2.cvtColor(box, cv2.COLOR_RGB2GRAY).mean()) if box.size else 0.0
    return FrameStats(index, yaw, pitch, float(np.ptp(lm[:, :2], axis=0).max()), face_sharpness(image, lm),
                      brightness, eye_opening(lm), face_signals(lm)["mouth_open"])


def eye_opening(landmarks: np.ndarray) -> float:
    """Lid gap over eye width (the eye aspect ratio) of both eyes, each weighted by its width in
    pixels: a turned head foreshortens the far eye's width, not its lid gap, so its ratio grows
    with the turn; weighted by width, the near eye, seen face-on, decides. landmarks (478, 2+)."""
    p = np.asarray(landmarks, np.float64)[:, :2]
    gaps, widths = [], []
    for outer, inner, upper, lower in (RIGHT_EYE, LEFT_EYE):
        gaps.append(float(np.linalg.norm(p[upper] - p[lower])))
        widths.append(float(np.linalg.norm(p[outer] - p[inner])))
    return sum(gaps) / max(sum(widths), 1e-6)  # = sum_e w_e (gap_e / w_e) / sum_e w_e


def scan_clip(path: str | Path, data=None, stop: int | None = None, max_frames: int = SCAN_FRAMES,
              fov_y_deg: float = REAL_FOV_Y_DEG, progress: Callable[[int, int], None] | None = None) -> ClipScan:
    """Track at most max_frames frames spread over the clip (before frame stop) with the mean
    identity and measure each one with a face (frame_stats). progress(done, total) in frames of
    the clip. VideoSourceError when the file cannot be read as a video."""
    from savatar.core.drive.tracking import VideoReader, track_identity

    if data is None:
        from savatar.core.head.open_head import load_open_head_data
        data = load_open_head_data()
    try:
        video = VideoReader(path)
    except OSError:
        raise VideoSourceError(f"{path}: cannot be read as a video (not a video, or a format OpenCV cannot "
                               "read)") from None
    stats: list[FrameStats] = []
    scanned = 0
    with video:
        end = video.count if stop is None else min(stop, video.count or stop)
        stride = max(1, -(-end // max_frames)) if end else 1
        with closing(track_identity(video, data, None, None, fov_y_deg, stride, stop)) as tracked:
            for t in tracked:
                scanned += 1
                fit = t.fit
                if fit.status == "ok" and fit.landmarks is not None and len(fit.landmarks) >= 468:
                    stats.append(frame_stats(t.index, t.image, fit.landmarks, fit.pose[0:3]))
                if progress is not None:
                    progress(t.index + 1, end)
        read = end if scanned else 0
        if scanned and not end:  # the file did not say how long it is
            read = (stats[-1].index + 1) if stats else scanned * stride
    return ClipScan(Path(path), stats, scanned, read, video.fps)


def choose_from_scan(scan: ClipScan, k: int = DEFAULT_SOURCES) -> Choice:
    """choose_sources over a scan, VideoSourceError (one line naming the file) when the clip is
    unreadable, too short, faceless, or has no usable frame (too dark, blurred, eyes closed)."""
    path = scan.path
    if scan.scanned == 0:
        raise VideoSourceError(f"{path}: no frame could be decoded (not a video, or damaged)")
    if scan.read < MIN_CLIP_FRAMES:
        raise VideoSourceError(f"{path}: too short ({scan.read} frames, need at least {MIN_CLIP_FRAMES})")
    if not scan.stats:
        raise VideoSourceError(f"{path}: no face found in any of the {scan.scanned} frames looked at")
    choice = choose_sources(scan.stats, k)
    if not choice.chosen:
        raise VideoSourceError(f"{path}: {choice.reason}")
    return choice


def read_frames(path: str | Path, indices: list[int]) -> dict[int, np.ndarray]:
    """The frames at indices of the video at path: index -> RGB uint8 (H, W, 3) at full size."""
    from savatar.core.drive.tracking import VideoReader

    wanted, out = set(int(i) for i in indices), {}
    with VideoReader(path) as video:
        for i, rgb in video.frames():
            if i in wanted:
                out[i] = rgb
                if len(out) == len(wanted):
                    break
    return out


def chosen_frames(path: str | Path, k: int = DEFAULT_SOURCES, data=None, stop: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  ) -> tuple[dict[int, np.ndarray], Choice, ClipScan]:
    """Scan the clip, choose k source frames and decode them: ({frame index: RGB uint8 (H, W, 3)}
    in the choice's order, Choice, ClipScan). progress(done, total) as scan_clip's.
    VideoSourceError as choose_from_scan, or when no chosen frame decodes again."""
    scan = scan_clip(path, data, stop=stop, progress=progress)
    choice = choose_from_scan(scan, k)
    indices = [scan.stats[i].index for i in choice.chosen]
    images = read_frames(path, indices)
    frames = {i: images[i] for i in indices if i in images}
    if not frames:
        raise VideoSourceError(f"{path}: the chosen frames could not be decoded again (damaged file)")
    return frames, choice, scan


def build_from_video(path: str | Path, k: int = DEFAULT_SOURCES, count: int = 60000, stop: int | None = None,
                     progress: Callable[[float, str], None] | None = None, cancel: threading.Event | None = None,
                     data=None):
    """(avatar, SourceResults named "frame N", Choice, ClipScan) built from the k frames of the
    clip chosen by choose_sources. progress(fraction, stage) as build_avatar's: the scan takes
    the first 40 %. VideoSourceError as chosen_frames; BuildError when the build rejects all
    chosen frames."""
    from savatar.core.build.build import BuildError, build_avatar, relabel_sources

    def scan_progress(done: int, total: int) -> None:
        if progress is not None and total:
            progress(0.4 * min(done / total, 1.0), "choose frames")

    frames, choice, scan = chosen_frames(path, k, data, stop, scan_progress)
    inner = None if progress is None else (lambda f, stage: progress(0.4 + 0.6 * f, stage))
    try:
        # No colour sharpening: the refinement that follows fits the colours to many more frames.
        avatar, results = build_avatar(list(frames.values()), count=count, progress=inner, cancel=cancel,
                                       data=data, sharpen=False)
    except BuildError as exc:
        raise BuildError(f"{path}: {exc}") from None
    relabel_sources(avatar, results, [f"frame {i}" for i in frames])
    return avatar, results, choice, scan

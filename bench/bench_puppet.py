"""Puppeteering real faces: the bundled default avatar driven by real clips of other people.

For each clip of the real development set (SAVATAR_REAL_DIR, default ../shared/real beside the
repository; skipped with a one-line message where it is absent): the clip is tracked with the
default avatar's identity (track_clip), retargeted onto the avatar (the driver's neutral from
the clip's resting frames mapped to the avatar's rest face, expressions and jaw read in the basis
MediaPipe sees on renders of the head model: savatar.core.drive.retarget), rendered frame for frame in the tracker's camera
with the gl renderer (cross-reenactment: self_reenactment=False), and MediaPipe's six face
signals on the real frames and on the renders are correlated over the clip. 1 means the avatar
does exactly what the person does; the target is >= 0.85 for every signal on every clip.

Side-by-side pictures (real | avatar) of the frames where the person grins, frowns, blinks,
raises the brows and tilts the head most go to bench/results/puppet/ (the picture in docs/ is
scripts/puppet_side_by_side.py's, from the MIT-licensed clips only). SAVATAR_PUPPET_RAW=1
measures the tracker without retargeting.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench import entry
from bench.display import x_display
from bench.real_clips import gl_drawer, per_clip_table, real_clips

MAX_SCORED = 180
REAL_DIR = Path(os.environ.get("SAVATAR_REAL_DIR", Path(__file__).resolve().parents[2] / "shared" / "real"))
RESULTS = Path(__file__).resolve().parent / "results" / "puppet"
# Every signal's extreme that the pictures show: (label, signal, +1 for its largest value, -1 smallest).
MOMENTS = (("grin", "mouth_width", 1), ("frown", "brow_height", -1), ("blink", "eye_open", -1),
           ("brow_raise", "brow_height", 1), ("head_tilt", "head_roll", 0), ("mouth_open", "mouth_open", 1))


def retarget_tracked(clip, avatar, data):
    """The clip with expression and pose retargeted onto the avatar (neutral from its resting frames)."""
    from savatar.core.drive.retarget import Retargeter

    rt = Retargeter.for_clip(data, clip.K, clip.landmarks, clip.fps, shape=avatar.shape.numpy(),
                             static_offset=avatar.static_offset.numpy())
    # Smoothed as `savatar track` and the webcam smooth it: what the user sees.
    expr, pose, trans = rt.refit_all(clip.landmarks, clip.expr, clip.pose, clip.translation, fps=clip.fps)
    return replace(clip, expr=expr, pose=pose, translation=trans), rt


def _save_moments(path: Path, frames: list, scores: list) -> list[str]:
    from PIL import Image

    from savatar.core.io.pixels import to_uint8

    both = [k for k, s in enumerate(scores) if s.face and s.render_face]
    if not both:
        return []
    RESULTS.mkdir(parents=True, exist_ok=True)
    written = []
    for label, signal, sign in MOMENTS:
        values = np.array([scores[k].signals_real[signal] for k in both])
        if sign == 0:
            pick = both[int(np.argmax(np.abs(values - np.median(values))))]
        else:
            pick = both[int(np.argmax(sign * values))]
        real, render = frames[pick]
        image = np.concatenate([real, to_uint8(render)], axis=1)
        out = RESULTS / f"{path.stem}_{label}.png"
        Image.fromarray(image).save(out)
        written.append(out.name)
    return written


def puppet_clip(path: Path, draw, raw: bool = False) -> dict[str, float]:
    from savatar.core.build.default_avatar import default_avatar
    from savatar.core.gaussians.rig import Rig
    from savatar.core.reenact.reenact import reenact, track_clip
    from savatar.core.reenact.scores import summarize

    avatar = default_avatar()
    rig = Rig.of(avatar)
    t0 = time.perf_counter()
    clip = track_clip(path, avatar, rig.data)
    track_s = time.perf_counter() - t0
    residual = float("nan")
    if not raw:
        t0 = time.perf_counter()
        clip, rt = retarget_tracked(clip, avatar, rig.data)
        track_s += time.perf_counter() - t0
        residual = float(np.nanmedian(rt.last_residuals)) if len(rt.last_residuals) else float("nan")
    scores, frames = [], []
    t0 = time.perf_counter()
    # Long clips are scored on every other frame (the correlation needs the motion, not every frame).
    scored = range(0, len(clip), max(1, len(clip) // MAX_SCORED + 1))
    for f in reenact(clip, avatar, draw, self_reenactment=False, rig=rig, frames=scored):
        scores.append(f.scores)
        frames.append((f.real, f.render))
    reenact_s = time.perf_counter() - t0
    s = summarize(scores)
    _save_moments(path, frames, scores)
    out = {"frames_count": float(len(clip)), "track_ms_per_frame": 1e3 * track_s / max(len(clip), 1),
           "reenact_s_per_frame": reenact_s / max(len(scores), 1), "landmark_distance_iod": s["landmark_distance"],
           "fit_residual_median_px": residual, "correlation_mean": s["correlation_mean"]}
    for signal, r in s["correlation"].items():
        out[f"corr_{signal}"] = float(r)
    for signal, a in s["amplitude"].items():
        out[f"amplitude_{signal}"] = float(a)
    out["corr_min"] = float(np.nanmin(list(s["correlation"].values())))
    return out


@entry("puppet")
def puppet() -> dict[str, float]:
    clips = real_clips("puppet", REAL_DIR)
    if not clips:
        return {}
    raw = os.environ.get("SAVATAR_PUPPET_RAW", "") not in ("", "0")
    with x_display():
        draw = gl_drawer()
        out = per_clip_table(clips, lambda path: puppet_clip(path, draw, raw))
    out["min_corr_min"] = float(min(out[f"{path.stem}_corr_min"] for path in clips))
    return out

"""Fidelity on real people: self-reenactment of real clips (the one-shot avatar papers' protocol).

For each clip of the real development set (SAVATAR_REAL_DIR, default ../shared/real beside the
repository; the entry is skipped with a one-line message where it is absent):
(a) one-shot: an avatar built from the clip's first frame, driven by the tracked rest;
(b) from video: the same avatar refined on the clip's first half (REFINE_ITERATIONS at
    REFINE_SIZE px), driven by the tracked second half.
Scores (savatar.core.reenact.scores) over at most SCORED_FRAMES frames evenly spread over the
driven part: PSNR in the real frame's head mask, PSNR and SSIM of the matted head crop, coverage,
landmark distance and the face signals' correlations; build, refine and reenact times; with the
judge extra installed, dlib's identity distance between each real frame and its render (same
person below 0.6) and the fraction of frames judged the same person.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench import entry
from bench.display import x_display
from bench.identity import SAME_PERSON, IdentityJudge
from bench.identity import available as identity_available
from bench.real_clips import gl_drawer, per_clip_table, real_clips

REAL_DIR = Path(os.environ.get("SAVATAR_REAL_DIR", Path(__file__).resolve().parents[2] / "shared" / "real"))
SCORED_FRAMES = 30
REFINE_ITERATIONS = 150
REFINE_SIZE = 192
REFINE_FRAMES = 40
# SAVATAR_FIDELITY_ONESHOT=1 scores the one-shot avatars only (a quick check of a build change).
ONE_SHOT_ONLY = os.environ.get("SAVATAR_FIDELITY_ONESHOT", "") not in ("", "0")


def _scores(clip, avatar, rig, draw, frames, judge) -> dict:
    from savatar.core.io.pixels import to_uint8
    from savatar.core.reenact.reenact import reenact
    from savatar.core.reenact.scores import summarize

    t0 = time.perf_counter()
    scored, identity, judged_s = [], [], 0.0
    for f in reenact(clip, avatar, draw, self_reenactment=True, frames=frames, rig=rig):
        scored.append(f.scores)
        if judge is not None and f.scores.face:
            t1 = time.perf_counter()
            identity.append(judge.distance(f.real, to_uint8(f.render)))
            judged_s += time.perf_counter() - t1
    out = summarize(scored)
    out["reenact_s_per_frame"] = (time.perf_counter() - t0 - judged_s) / max(len(scored), 1)
    if judge is not None:
        found = [d for d in identity if math.isfinite(d)]
        out["identity_distance"] = float(np.mean(found)) if found else float("nan")
        out["identity_same_fraction"] = float(np.mean([d < SAME_PERSON for d in found])) if found else float("nan")
    return out


def _spread(start: int, stop: int, count: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(start, stop - 1, min(count, stop - start))})


def _first_frame(path: Path) -> np.ndarray:
    from savatar.core.drive.tracking import VideoReader

    with VideoReader(path) as video:
        return next(video.frames())[1]


def _clip_entry(path: Path, draw, judge) -> dict[str, float]:
    import torch

    from savatar.core.build.build import build_avatar
    from savatar.core.gaussians.rig import Rig
    from savatar.core.reenact.reenact import track_clip
    from savatar.core.refine.frame_sources import frames_from_video
    from savatar.core.refine.refine import RefineConfig, Refiner

    t0 = time.perf_counter()
    avatar, _ = build_avatar([_first_frame(path)])
    build_s = time.perf_counter() - t0
    rig = Rig.of(avatar)
    clip = track_clip(path, avatar, rig.data)
    n = len(clip)
    half = n // 2
    one_shot = _scores(clip, avatar, rig, draw, _spread(1, n, SCORED_FRAMES), judge)
    out: dict[str, float] = {"frames_count": float(n), "build_s": build_s}
    if ONE_SHOT_ONLY:
        return _numbers(out, {"oneshot": one_shot})

    t0 = time.perf_counter()
    torch.set_num_threads(2)
    frames = frames_from_video(path, avatar, rig.data, size=REFINE_SIZE, max_frames=REFINE_FRAMES,
                               stop=int(clip.indices[half]))
    refiner = Refiner(avatar, rig, frames, RefineConfig(iterations=REFINE_ITERATIONS, backend="cpu",
                                                        report_every=10 ** 9, checkpoint_every=0))
    refiner.run()
    refined = refiner.current_avatar()
    refine_s = time.perf_counter() - t0
    video = _scores(clip, refined, Rig(refined, rig.model), draw, _spread(half, n, SCORED_FRAMES), judge)

    out["refine_s"] = refine_s
    return _numbers(out, {"oneshot": one_shot, "video": video})


def _numbers(out: dict[str, float], scores: dict[str, dict]) -> dict[str, float]:
    """out with every score of every label ("oneshot", "video") as "{label}_{key}{unit}"."""
    for label, s in scores.items():
        for key in ("psnr_mask", "psnr_crop", "ssim_crop", "coverage", "landmark_distance", "correlation_mean",
                    "reenact_s_per_frame", "identity_distance", "identity_same_fraction"):
            unit = {"psnr_mask": "_db", "psnr_crop": "_db", "landmark_distance": "_iod"}.get(key, "")
            if key in s:
                out[f"{label}_{key}{unit}"] = float(s[key])
        for signal, r in s["correlation"].items():
            out[f"{label}_corr_{signal}"] = float(r)
    return out


@entry("fidelity")
def fidelity() -> dict[str, float]:
    clips = real_clips("fidelity", REAL_DIR)
    if not clips:
        return {}
    with x_display():
        draw = gl_drawer()
        judge = IdentityJudge() if identity_available() else None
        if judge is None:
            print("fidelity: no identity scores (pip install .[judge] for dlib's face recognition)", file=sys.stderr)
        return per_clip_table(clips, lambda path: _clip_entry(path, draw, judge))

"""An avatar from a selfie video in minutes (issue 16): `savatar build --video` on the first half of
each real development clip (SAVATAR_REAL_DIR, as bench fidelity; skipped where absent), run as
the user runs it (a fresh process, default budget, --stop at the half), wall time measured
around the whole command; then the second half reenacted with the result and scored as bench
fidelity does (psnr_crop: the head crop matted with the real frame's head mask, hair counted),
next to the one-shot avatar built from the clip's first frame on the same frames.

Keys per clip: wall_s (the command, start to exit), sources (frames chosen), iterations
(refinement steps done in the budget), video_* and oneshot_* scores over at most SCORED_FRAMES
frames of the second half, gain_psnr_crop_db (video minus one-shot); mean_* over the clips.
"""
from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import entry
from bench.bench_fidelity import REAL_DIR, SCORED_FRAMES, _first_frame, _scores, _spread
from bench.display import x_display
from bench.real_clips import gl_drawer, per_clip_table, real_clips

KEYS = ("psnr_mask", "psnr_crop", "ssim_crop", "coverage", "landmark_distance", "correlation_mean")
UNITS = {"psnr_mask": "_db", "psnr_crop": "_db", "landmark_distance": "_iod"}


def _clip_entry(path: Path, draw, tmp: Path, options: tuple[str, ...] = (), oneshot: bool = True,
                command: tuple[str, ...] = (sys.executable, "-m", "savatar.cli")) -> dict[str, float]:
    """The numbers of one clip; options are added to the build command, which command runs
    (experiments)."""
    from savatar.core.build.build import build_avatar
    from savatar.core.drive.tracking import VideoReader
    from savatar.core.gaussians.rig import Rig
    from savatar.core.io.avatar_file import load_avatar
    from savatar.core.reenact.reenact import track_clip

    with VideoReader(path) as video:
        count = video.count
    half = count // 2
    out = tmp / f"{path.stem}.h5"
    t0 = time.perf_counter()
    proc = subprocess.run([*command, "build", "--video", str(path), "--stop", str(half),
                           "-o", str(out), *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name}: build --video failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    print(f"{path.name}: {proc.stdout.strip().splitlines()[-1]}", file=sys.stderr)
    avatar = load_avatar(out)
    rig = Rig.of(avatar)
    clip = track_clip(path, avatar, rig.data)
    start = int(np.searchsorted(clip.indices, half))  # the first tracked frame of the second half
    scored = _spread(start, len(clip), SCORED_FRAMES)
    video = _scores(clip, avatar, rig, draw, scored, None)

    results = [("video", video)]
    if oneshot:
        one = build_avatar([_first_frame(path)])[0]
        one_rig = Rig.of(one)
        one_clip = track_clip(path, one, one_rig.data)
        results.append(("oneshot", _scores(one_clip, one, one_rig, draw, scored, None)))

    numbers: dict[str, float] = {"wall_s": wall, "sources": float(len(avatar.metadata.get("sources") or [])),
                                 "iterations": float((avatar.metadata.get("refinement") or {}).get("iterations", 0))}
    for label, s in results:
        for key in KEYS:
            if key in s:
                numbers[f"{label}_{key}{UNITS.get(key, '')}"] = float(s[key])
    numbers["gain_psnr_crop_db"] = numbers.get("video_psnr_crop_db", math.nan) - numbers.get("oneshot_psnr_crop_db",
                                                                                               math.nan)
    return numbers


@entry("video_build")
def video_build() -> dict[str, float]:
    clips = real_clips("video_build", REAL_DIR)
    if not clips:
        return {}
    with x_display(), tempfile.TemporaryDirectory() as tmp:
        draw = gl_drawer()
        out = per_clip_table(clips, lambda path: _clip_entry(path, draw, Path(tmp)))
    out["max_wall_s"] = max(out[f"{path.stem}_wall_s"] for path in clips)
    return out

"""What the benches on real clips share: the clips, a GL drawer, and per-clip numbers with their
means over the clips."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np


def real_clips(entry: str, real_dir: Path) -> list[Path]:
    """The .mp4 clips in real_dir, or [] with the entry's one-line skip message."""
    clips = sorted(real_dir.glob("*.mp4")) if real_dir.is_dir() else []
    if not clips:
        print(f"{entry}: skipped, no real clips in {real_dir} (set SAVATAR_REAL_DIR)", file=sys.stderr)
    return clips


def gl_drawer() -> Callable:
    """draw(g, cam) -> (rgb (H, W, 3), alpha (H, W)) on white, with OpenGL (inside x_display)."""
    from savatar.gl.splat_renderer import SplatRenderer

    splat = SplatRenderer()

    def draw(g, cam):
        image = splat.render(g, cam, (1.0, 1.0, 1.0))
        return image.rgb, image.alpha[..., 0]
    return draw


def per_clip_table(clips: list[Path], measure: Callable[[Path], dict[str, float]]) -> dict[str, float]:
    """measure(clip) for every clip, as "{stem}_{key}", and "mean_{key}" over the clips that
    have the key finite."""
    out: dict[str, float] = {}
    per_clip = []
    for path in clips:
        numbers = measure(path)
        per_clip.append(numbers)
        out.update({f"{path.stem}_{k}": v for k, v in numbers.items()})
    for key in dict.fromkeys(k for c in per_clip for k in c):
        values = [c[key] for c in per_clip if key in c and math.isfinite(c[key])]
        out[f"mean_{key}"] = float(np.mean(values)) if values else float("nan")
    return out

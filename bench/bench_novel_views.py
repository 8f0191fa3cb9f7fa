"""Avatars built from one real portrait, seen from the side: does it stay the person?

For each portrait (scikit-image's astronaut, the real development portraits and the first frames
of the development clips, where SAVATAR_REAL_DIR has them; and every .jpg/.png in
SAVATAR_PORTRAITS_DIR, for portraits of more people): build, render at yaw 0, +-45, +-60
degrees (OpenGL, 512x512, the head framed), and measure whether MediaPipe finds a face and, with
the judge extra, dlib's identity distance to the portrait (same person below 0.6). Writes the
renders beside the results (bench/results/novel_views/) for looking at.

One render's distance moves by a few hundredths with the view (four degrees of yaw or pitch), so
each yaw is also judged on its neighbourhood, NEIGHBOURS degrees of yaw and pitch either way:
mean_identity_yaw*_near is the mean over those five views, the number to compare two builds by.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from bench import entry
from bench.display import x_display
from bench.identity import IdentityJudge
from bench.identity import available as identity_available

YAWS = (0, -45, 45, -60, 60)
NEIGHBOURS = 4.0  # degrees
OUT = Path(__file__).parent / "results" / "novel_views"


def _portraits() -> dict[str, np.ndarray]:
    import skimage.data
    from PIL import Image

    from bench.bench_fidelity import REAL_DIR, _first_frame

    out = {"astronaut": skimage.data.astronaut()}
    if REAL_DIR.is_dir():
        for p in sorted(REAL_DIR.glob("*.jpg")):
            out[p.stem] = np.asarray(Image.open(p).convert("RGB"))
        for p in sorted(REAL_DIR.glob("*.mp4")):
            out[p.stem] = _first_frame(p)
    else:
        print(f"novel_views: only the astronaut, no real portraits in {REAL_DIR}", file=sys.stderr)
    extra = os.environ.get("SAVATAR_PORTRAITS_DIR")
    if extra:
        for p in sorted(Path(extra).glob("*")):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                out[p.stem] = np.asarray(Image.open(p).convert("RGB"))
    return out


@entry("novel_views")
def novel_views() -> dict[str, float]:
    from PIL import Image

    from savatar.core.build.build import build_avatar
    from savatar.core.drive.face_landmarks import FaceLandmarker
    from savatar.core.gaussians.rig import Rig
    from savatar.core.io.pixels import to_uint8
    from savatar.core.render.camera import orbit_camera

    OUT.mkdir(parents=True, exist_ok=True)
    judge = IdentityJudge() if identity_available() else None
    out: dict[str, float] = {}
    per_yaw: dict[int, list[float]] = {y: [] for y in YAWS}
    near: dict[int, list[float]] = {y: [] for y in YAWS}
    found: dict[int, list[bool]] = {y: [] for y in YAWS}
    with x_display():
        from savatar.gl.splat_renderer import SplatRenderer

        splat = SplatRenderer()
        with FaceLandmarker() as landmarker:
            for name, image in _portraits().items():
                avatar, _ = build_avatar([image])
                rig = Rig.of(avatar)
                verts = rig.vertices().numpy()
                face = rig.data.vertex_regions["face"]
                target = tuple(0.5 * (verts[face].min(0) + verts[face].max(0)))
                views = []
                world = rig.world()
                shot = lambda yaw, pitch: to_uint8(splat.render(world, orbit_camera(yaw, pitch, 0.55, target, 512, 512, 30.0),  # noqa: E731
                                                                (1.0, 1.0, 1.0)).rgb)
                for yaw in YAWS:
                    view = shot(yaw, 0)
                    views.append(view)
                    found[yaw].append(landmarker(view) is not None)
                    if judge is not None:
                        d = judge.distance(image, view)
                        per_yaw[yaw].append(d)
                        out[f"{name}_identity_yaw{yaw}"] = d
                        around = [d] + [judge.distance(image, shot(yaw + dy, dp)) for dy, dp in
                                        ((-NEIGHBOURS, 0), (NEIGHBOURS, 0), (0, -NEIGHBOURS), (0, NEIGHBOURS))]
                        judged = [a for a in around if np.isfinite(a)]
                        near[yaw].append(float(np.mean(judged)) if judged else float("nan"))
                        out[f"{name}_identity_yaw{yaw}_near"] = near[yaw][-1]
                Image.fromarray(np.concatenate(views, 1)).save(OUT / f"{name}.png")
    for yaw in YAWS:
        out[f"face_found_yaw{yaw}_fraction"] = float(np.mean(found[yaw]))
        values = [d for d in per_yaw[yaw] if np.isfinite(d)]
        if judge is not None:
            out[f"mean_identity_yaw{yaw}"] = float(np.mean(values)) if values else float("nan")
            values = [d for d in near[yaw] if np.isfinite(d)]
            out[f"mean_identity_yaw{yaw}_near"] = float(np.mean(values)) if values else float("nan")
            # dlib's detector gives up on some turned renders: the mean is over the others only,
            # so it moves with which portraits those are.
            out[f"identity_judged_yaw{yaw}_fraction"] = len(values) / max(len(per_yaw[yaw]), 1)
    return out

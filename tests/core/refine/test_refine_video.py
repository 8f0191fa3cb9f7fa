"""Refining from a video improves the avatar (savatar refine --video, end to end in the library):
a clip of a "person" who differs from the start avatar in appearance (the same head with a tan,
painted cheeks and forehead and darker brows) is rendered through the tracking camera, tracked
with the START avatar's identity (savatar.core.refine.frame_sources.frames_from_video) and refined
on.
Held-out frames get clearly closer inside their masks, the colours move towards the person's,
the layout stays; the same refinement on frames whose camera is 15 % off gains far less.

The clip and its helpers are test_frame_sources's (same camera, background and motion)."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_frame_sources import FOV, H, W, clip_params, drawer  # noqa: E402

from savatar.core.drive.tracking import TRACKING_VIEWMAT, intrinsics_for  # noqa: E402
from savatar.core.gaussians.binding import deform, init_avatar  # noqa: E402
from savatar.core.gaussians.gaussians import SH_C0, rgb_to_sh0  # noqa: E402
from savatar.core.gaussians.rig import Rig  # noqa: E402
from savatar.core.head.head_model import HeadModel  # noqa: E402
from savatar.core.head.open_head import load_open_head_data  # noqa: E402
from savatar.core.io.pixels import to_uint8  # noqa: E402
from savatar.core.io.video_file import VideoWriter  # noqa: E402
from savatar.core.refine.frame_sources import frames_from_video  # noqa: E402
from savatar.core.refine.image_metrics import psnr  # noqa: E402
from savatar.core.refine.refine import RefineConfig, Refiner  # noqa: E402
from savatar.core.render.api import render  # noqa: E402
from savatar.core.render.camera import Camera  # noqa: E402

COUNT = 5000  # Gaussians (the default avatar's layout, smaller: a CPU step costs ~0.15 s at 128 px)
SIZE = 128  # refinement frames: face crops of 128x128
FRAMES = 12
HELD_OUT = (3, 8)
ITERATIONS = 100
# 100 iterations stand in for the default 10,000: the colour rate is raised 8x so colours can
# get there (as bench refine_extreme does); every other rate is the default.
LR_SH = 2e-2
# MediaPipe Face Mesh indices (the open head carries all 478 as landmarks).
CHEEKS = (50, 280)
FOREHEAD, TOP, CHIN = 151, 10, 152
BROWS = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 336, 296, 334, 293, 300, 276, 283, 282, 295, 285)


def colours(avatar) -> np.ndarray:
    """(N, 3) degree-0 colour of every Gaussian."""
    return (avatar.sh[:, 0].detach().double().numpy() * SH_C0 + 0.5).clip(0, 1)


def painted(avatar, data) -> tuple[object, dict[str, np.ndarray]]:
    """avatar with another person's appearance, and the Gaussians (N,) bool of each change:
    "tan" (every face Gaussian, darker and warmer, more so towards the forehead), "cheeks"
    (discs of 2 cm radius in red and blue bands 6 mm wide), "forehead" (a yellow diamond),
    "brows" (a quarter as bright). Positions are on the neutral head, in metres."""
    model = HeadModel(data)
    with torch.no_grad():
        verts = model(shape=avatar.shape[None]).vertices[0]
        pos = deform(avatar, verts, model.faces).means.double().numpy()
    v = verts.double().numpy()
    lmk = (data.lmk_bary[:, :, None] * v[data.faces[data.lmk_faces]]).sum(1)
    face_vertex = np.zeros(len(v), bool)
    face_vertex[data.vertex_regions["face"]] = True
    face = face_vertex[data.faces[avatar.face.numpy()]].all(1)
    rgb = colours(avatar)
    up = np.clip((pos[:, 1] - lmk[CHIN, 1]) / (lmk[TOP, 1] - lmk[CHIN, 1]), 0, 1)[:, None]
    rgb = np.where(face[:, None], rgb * (1 - 0.35 * (0.4 + 0.6 * up) * np.array([0.5, 0.8, 1.0])), rgb)
    cheeks = face & (np.linalg.norm(pos[:, None] - lmk[list(CHEEKS)][None], axis=2).min(1) < 0.02)
    band = np.floor((pos[:, 1] - lmk[CHEEKS[0], 1]) / 0.006) % 2 == 0
    rgb[cheeks] = np.where(band[:, None], [0.85, 0.1, 0.1], [0.1, 0.2, 0.85])[cheeks]
    diamond = np.abs(pos[:, 0] - lmk[FOREHEAD, 0]) + np.abs(pos[:, 1] - lmk[FOREHEAD, 1] - 0.005)
    forehead = face & (diamond < 0.022) & (pos[:, 2] > lmk[FOREHEAD, 2] - 0.02)
    rgb[forehead] = [0.95, 0.85, 0.1]
    brows = face & (np.linalg.norm(pos[:, None] - lmk[list(BROWS)][None], axis=2).min(1) < 0.006)
    rgb[brows] *= 0.25
    sh = avatar.sh.clone()
    sh[:, 0] = rgb_to_sh0(torch.tensor(rgb.clip(0, 1), dtype=torch.float32))
    return dataclasses.replace(avatar, sh=sh, metadata={}), {"tan": face, "cheeks": cheeks, "forehead": forehead,
                                                              "brows": brows}


def held_out_psnr(avatar, frames) -> float:
    """Mean PSNR inside the frames' masks (> 0.5) of avatar posed with each frame's tracked
    parameters, seen by its camera, on the refiner's background (what the loss compares)."""
    rig = Rig.of(avatar)
    background = torch.tensor(RefineConfig().background, dtype=torch.float32)
    out = []
    for f in frames:
        world = rig.world(f.expr.numpy(), f.pose.numpy(), f.translation.numpy())
        with torch.no_grad():
            rgb = render(world, f.viewmat, f.K, f.width, f.height, background, backend="cpu").rgb.clamp(0, 1)
        out.append(psnr(rgb, f.image, f.mask))
    return float(np.mean(out))


def colour_error(avatar, truth, sel: np.ndarray) -> float:
    """L1 distance (summed over RGB) between the mean colours of avatar and truth over sel: the
    region's look, insensitive to the millimetres a tracked fit is off by."""
    return float(np.abs(colours(avatar)[sel].mean(0) - colours(truth)[sel].mean(0)).sum())


def focal_off(K: torch.Tensor, factor: float = 1.15) -> torch.Tensor:
    k = K.clone()
    k[:2, :2] *= factor
    return k


def refine(start, frames):
    config = RefineConfig(iterations=ITERATIONS, lr_sh=LR_SH, backend="cpu", held_out=HELD_OUT, seed=0)
    refiner = Refiner(start, Rig.of(start), frames, config)
    for _ in range(ITERATIONS):
        refiner.step()
    refiner.check_layout()
    return refiner.current_avatar()


@pytest.fixture
def one_thread():
    """torch on one thread, as the viewer refines: with two threads on this 2-core machine, a
    step took 20-40x longer (0.15-0.3 against 6 it/s) whenever another process kept a core
    busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_refining_from_a_video_improves_the_avatar(tmp_path, one_thread):
    t0 = time.perf_counter()
    data = load_open_head_data()
    start = init_avatar(data, COUNT, bake_light=True)
    truth, regions = painted(start, data)
    names = list(data.expr_names)
    cam = Camera(TRACKING_VIEWMAT, intrinsics_for(W, H, FOV), W, H)
    draw, rig = drawer(), Rig.of(truth)
    clip = tmp_path / "person.mp4"
    writer = VideoWriter(clip, 10, W, H)
    for t in range(FRAMES):
        writer.write(to_uint8(draw(rig.world(*clip_params(names, t)), cam)[0]))
    writer.close()
    t1 = time.perf_counter()
    frames = frames_from_video(clip, start, size=SIZE)  # tracked with the start avatar's identity
    assert len(frames) == FRAMES and all((f.width, f.height) == (SIZE, SIZE) for f in frames)
    held = [frames[i] for i in HELD_OUT]
    t2 = time.perf_counter()
    refined = refine(start, frames)
    t3 = time.perf_counter()
    # Control: the same frames with the focal length 15 % off (test_frame_sources: 5-6 dB worse
    # alignment than tracked), evaluated on the correctly tracked held-out frames.
    wrong = [dataclasses.replace(f, K=focal_off(f.K)) for f in frames]
    misaligned = refine(start, wrong)
    t4 = time.perf_counter()

    scores = {name: held_out_psnr(a, held) for name, a in
            (("start", start), ("person", truth), ("refined", refined), ("misaligned", misaligned))}
    paint = ("cheeks", "forehead", "brows")
    err = {name: {k: colour_error(a, truth, regions[k]) for k in regions} for name, a in
           (("start", start), ("refined", refined), ("misaligned", misaligned))}
    print(f"clip {t1 - t0:.1f} s, tracking {t2 - t1:.1f} s, refinements {t3 - t2:.1f} + {t4 - t3:.1f} s "
          f"({ITERATIONS} iterations, {COUNT} Gaussians, {SIZE} px)")
    print("held-out PSNR in the masks: " + ", ".join(f"{k} {v:.2f} dB" for k, v in scores.items()))
    for name, e in err.items():
        print(f"mean colour error {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in e.items()))

    # The layout is the start's: same count, binding and identity.
    for a in (refined, misaligned):
        assert len(a) == COUNT and torch.equal(a.face, start.face)
        assert torch.equal(a.shape, start.shape) and torch.equal(a.static_offset, start.static_offset)
    # Measured (seeds 0-2, held-out 3, 8 or 2, 9): start 14.7-14.9 dB, refined 25.4-26.4 (+10.7
    # to +11.5), focal-off 18.3-19.0 (+3.6 to +4.1). Not all of it is appearance: the person's
    # own avatar scores only 16.5 here, the tracked fits being a few pixels off
    # (test_frame_sources), which refinement absorbs (a clip of the start avatar itself gains
    # 17.4 -> 24.4 dB); the colour checks below show the appearance itself was learned.
    gain, gain_wrong = scores["refined"] - scores["start"], scores["misaligned"] - scores["start"]
    assert gain > 7.0, scores
    assert gain_wrong < gain - 4.0, scores
    # Colours moved towards the person's: measured tan 0.31 -> 0.09 (0.12 focal-off); painted
    # regions 0.75 -> 0.54 on average (0.69 focal-off): cheeks 0.63 -> 0.33, brows 0.84 -> 0.62,
    # forehead 0.77 -> 0.66 (focal-off: brows 0.80, forehead 0.86, further than at the start).
    paint_err = {name: float(np.mean([e[k] for k in paint])) for name, e in err.items()}
    assert err["refined"]["tan"] < 0.5 * err["start"]["tan"], err
    assert paint_err["refined"] < 0.8 * paint_err["start"], paint_err
    assert paint_err["misaligned"] > paint_err["refined"] + 0.08, paint_err

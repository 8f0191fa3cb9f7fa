"""Reenactment on synthetic ground truth: a clip rendered from a known avatar and a known motion
(every face signal moves), reenacted with that avatar, lines up with it; faceless stretches keep
the frame count and timing; the head mask never depends on the avatar; `savatar reenact` writes
videos, PNG folders and metrics, and says what is wrong in one line."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from savatar.core.drive.tracking import TRACKING_VIEWMAT, VideoReader, intrinsics_for
from savatar.core.build.default_avatar import default_avatar
from savatar.core.gaussians.rig import Rig
from savatar.core.io.pixels import to_uint8
from savatar.core.io.video_file import VideoWriter
from savatar.core.reenact.reenact import reenact, side_by_side, track_clip
from savatar.core.reenact.scores import SELF_SCORES, summarize
from savatar.core.render.camera import Camera

SIZE = 256
FPS = 10.0
FRAMES = 16
BACKGROUND = (0.55, 0.6, 0.65)


def motion(names: list[str], t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame t of a motion that moves every face signal: jaw, smile, blink, brows, yaw, roll."""
    e = np.zeros(len(names), np.float32)
    pose = np.zeros(15, np.float32)
    wave = lambda period, phase=0.0: 0.5 * (1 + np.sin(2 * np.pi * t / period + phase))  # noqa: E731
    e[names.index("mouthSmile_L")] = e[names.index("mouthSmile_R")] = 0.7 * wave(8)
    e[names.index("eyeBlink_L")] = e[names.index("eyeBlink_R")] = 0.9 * wave(5, 1.0)
    e[names.index("browInnerUp")] = e[names.index("browOuterUp_L")] = e[names.index("browOuterUp_R")] = wave(7, 2.0)
    pose[6] = 0.2 * wave(6, 0.5)  # jaw
    pose[1] = 0.3 * np.sin(2 * np.pi * t / FRAMES)  # yaw
    pose[2] = 0.15 * np.sin(2 * np.pi * t / 9)  # roll
    return e, pose, np.array([0.0, 0.0, -0.6], np.float32)


@pytest.fixture(scope="module")
def drawer():
    from savatar.gl.splat_renderer import SplatRenderer

    splat = SplatRenderer()

    def draw(g, cam, background=(1.0, 1.0, 1.0)):
        image = splat.render(g, cam, background)
        return image.rgb, image.alpha[..., 0]
    return draw


def write_clip(path, drawer, faceless=()) -> tuple[Rig, list]:
    """The default avatar driven by motion() on BACKGROUND, seen by the tracking camera; frames
    in faceless are the background alone."""
    avatar = default_avatar()
    rig = Rig.of(avatar)
    names = list(rig.data.expr_names)
    cam = Camera(TRACKING_VIEWMAT, intrinsics_for(SIZE, SIZE, 50.0), SIZE, SIZE)
    writer = VideoWriter(path, FPS, SIZE, SIZE)
    truth = []
    for t in range(FRAMES):
        params = motion(names, t)
        rgb = np.broadcast_to(np.float32(BACKGROUND), (SIZE, SIZE, 3)) if t in faceless else \
            drawer(rig.world(*params), cam, BACKGROUND)[0]
        writer.write(to_uint8(rgb))
        truth.append(params)
    writer.close()
    return rig, truth


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory, drawer):
    path = tmp_path_factory.mktemp("reenact") / "clip.avi"
    write_clip(path, drawer)
    return path


def test_self_reenactment_of_a_known_avatar_lines_up(clip_path, drawer):
    avatar = default_avatar()
    clip = track_clip(clip_path, avatar)
    assert len(clip) == FRAMES and clip.face.all() and (clip.width, clip.height) == (SIZE, SIZE)
    frames = list(reenact(clip, avatar, drawer))
    assert [f.index for f in frames] == list(range(FRAMES))
    assert all(f.render.shape == (SIZE, SIZE, 3) for f in frames)
    s = summarize([f.scores for f in frames])
    print("self-reenactment of the known avatar:", json.dumps(s, default=float))
    # Measured 19.8 dB in the mask, 27.1 dB on the matted crop, SSIM 0.95, coverage 0.99,
    # landmark distance 0.055 IOD; correlations: yaw 0.995, roll 0.95, mouth opening 0.94, mouth
    # width 0.69, brows 0.59, eyes 0.45. Far from exact, for the tracker's reason: it reads
    # MediaPipe's landmarks of the rendered avatar with a bias of a few pixels (pitch a few
    # degrees off, a smile tracked at about half its size, blinks partial), the puppeteering
    # issue's subject. The bounds below hold today's pipeline to what it does.
    assert s["psnr_mask"] > 17.0 and s["psnr_crop"] > 24.0 and s["ssim_crop"] > 0.9
    assert s["coverage"] > 0.95
    assert s["landmark_distance"] < 0.09
    c = s["correlation"]
    assert c["head_yaw"] > 0.95 and c["head_roll"] > 0.8 and c["mouth_open"] > 0.8
    assert min(c.values()) > 0.25, c
    # The picture: real | avatar | error, as wide as three frames.
    assert side_by_side(frames[0]).shape == (SIZE, 3 * SIZE, 3)


def test_a_wrong_avatar_scores_worse(clip_path, drawer):
    """The scores discriminate: an avatar with other colours, driven the same way, is clearly
    further from the frames."""
    avatar = default_avatar()
    other = dataclasses.replace(avatar, sh=avatar.sh.flip(0))  # every Gaussian wears another's colour
    clip = track_clip(clip_path, avatar)
    good = summarize([f.scores for f in reenact(clip, avatar, drawer, frames=range(0, FRAMES, 3))])
    bad = summarize([f.scores for f in reenact(clip, other, drawer, frames=range(0, FRAMES, 3))])
    assert bad["psnr_mask"] < good["psnr_mask"] - 3.0, (good["psnr_mask"], bad["psnr_mask"])


def test_head_mask_never_depends_on_the_avatar(clip_path, drawer):
    avatar = default_avatar()
    clip = track_clip(clip_path, avatar)
    smaller = dataclasses.replace(avatar, log_scale=avatar.log_scale - 1.0, opacity_logit=avatar.opacity_logit - 3)
    picks = range(0, FRAMES, 4)
    a = [f.mask for f in reenact(clip, avatar, drawer, frames=picks)]
    b = [f.mask for f in reenact(clip, smaller, drawer, frames=picks)]
    assert all(m is not None and m.any() for m in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_faceless_stretches_keep_frame_count_and_timing(tmp_path, drawer):
    path = tmp_path / "gaps.avi"
    faceless = {0, 1, 7, 8, 9}
    write_clip(path, drawer, faceless)
    avatar = default_avatar()
    clip = track_clip(path, avatar)
    assert len(clip) == FRAMES and clip.fps == pytest.approx(FPS)
    assert set(np.flatnonzero(~clip.face)) == faceless
    # Held poses: before the first face the first one's, in a gap the last one before it.
    np.testing.assert_array_equal(clip.pose[0], clip.pose[2])
    np.testing.assert_array_equal(clip.pose[8], clip.pose[6])
    frames = list(reenact(clip, avatar, drawer))
    s = summarize([f.scores for f in frames])
    assert s["frames"] == FRAMES and s["frames_without_face"] == sorted(faceless)
    assert all(f.render.shape == (SIZE, SIZE, 3) for f in frames)
    # A held frame shows the avatar where it was last seen.
    np.testing.assert_allclose(frames[8].render, frames[6].render, atol=1e-6)


def test_cli_reenact_png_folder_mp4_side_by_side_and_metrics(clip_path, tmp_path, capsys):
    from savatar.cli import main

    folder = tmp_path / "frames"
    metrics = tmp_path / "m.json"
    assert main(["reenact", str(clip_path), "-o", str(folder), "--self-reenactment", "--metrics", str(metrics),
                 "--background", "0,0,0"]) == 0
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(FRAMES)]
    from PIL import Image
    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == (SIZE, SIZE, 3) and (first[0, 0] == 0).all()  # the asked background, lossless
    report = json.loads(metrics.read_text())
    assert len(report["frames"]) == FRAMES and report["summary"]["psnr_mask"] > 15
    assert "PSNR in head mask" in capsys.readouterr().out

    out = tmp_path / "sbs.mp4"
    cross = tmp_path / "cross.json"
    assert main(["reenact", str(clip_path), "-o", str(out), "--side-by-side", "--metrics", str(cross)]) == 0
    with VideoReader(out) as video:
        frames = [f for _, f in video.frames()]
        assert len(frames) == FRAMES and video.fps == pytest.approx(FPS)
    assert frames[0].shape == (SIZE, 3 * SIZE, 3)
    # Across people (no --self-reenactment) only the scores that make sense there.
    summary = json.loads(cross.read_text())["summary"]
    assert not set(SELF_SCORES) & set(summary) and "landmark_distance" in summary and "correlation" in summary
    assert all(f["psnr_mask"] is None for f in json.loads(cross.read_text())["frames"])


@pytest.mark.parametrize("case, message", [("missing", "no such file"), ("junk", "cannot open the video"),
                                           ("faceless", "no face found"), ("avatar", "not a readable HDF5"),
                                           ("neutral", "frame 99 has no tracked face")])
def test_cli_reenact_errors_are_one_line(tmp_path, capsys, drawer, case, message):
    from savatar.cli import main

    video, extra = tmp_path / "v.avi", []
    if case == "junk":
        video.write_bytes(b"not a video at all")
    elif case == "faceless":
        writer = VideoWriter(video, FPS, 64, 64)
        for _ in range(3):
            writer.write(np.full((64, 64, 3), 128, np.uint8))
        writer.close()
    elif case == "avatar":
        (tmp_path / "bad.h5").write_bytes(b"junk")
        write_clip(video, drawer)
        extra = ["--avatar", str(tmp_path / "bad.h5")]
    elif case == "neutral":  # the driver's neutral frame is past the clip's end
        write_clip(video, drawer)
        extra = ["--neutral-frame", "99"]
    assert main(["reenact", str(video), "-o", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("savatar reenact: ") and message in err.splitlines()[-1], err
    assert "Traceback" not in err

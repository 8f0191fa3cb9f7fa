"""The savatar CLI: help, head description, mesh renders and one-line user errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from savatar.cli import main


def last_error_line(capsys, prefix: str = "savatar ") -> str:
    """The user error on stderr's last line (progress bars and MediaPipe's log may come before
    it), checked to be a one-line `prefix...` message without a traceback."""
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith(prefix) and "Traceback" not in err, err
    return last


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("head", "info", "render", "render-mesh", "export-ply"):
        assert cmd in out


def test_head_describes_the_open_model(capsys):
    assert main(["head"]) == 0
    out = capsys.readouterr().out
    assert "open-head" in out and "mouthSmile_L" in out and "478" in out


def test_render_mesh_writes_a_png_that_changes_with_yaw(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["render-mesh", "-W", "128", "-H", "128", "-o", str(a)]) == 0
    assert main(["render-mesh", "-W", "128", "-H", "128", "--yaw", "60", "--expr", "mouthSmile_L=1",
                 "--pose", "jaw=10,0,0", "-o", str(b)]) == 0
    ia, ib = (np.asarray(Image.open(p)).astype(float) for p in (a, b))
    assert ia.shape == (128, 128, 3)
    assert (ia < 250).any(axis=2).mean() > 0.1  # the head covers a good part of the frame
    assert np.abs(ia - ib).mean() > 5


@pytest.mark.parametrize("command", [["render", "me.h5", "-o", "x.png"], ["export-ply", "me.h5", "-o", "x.ply"],
                                     ["render-mesh", "-o", "x.png"]])
def test_expr_and_pose_take_several_values_or_repeated_flags(command):
    from savatar.cli import build_parser

    parse = build_parser().parse_args
    several = parse([*command, "--expr", "mouthSmile_L=0.8", "mouthSmile_R=0.8", "--pose", "jaw=10,0,0",
                     "neck=0,5,0"])
    repeated = parse([*command, "--expr", "mouthSmile_L=0.8", "--pose", "jaw=10,0,0", "--expr", "mouthSmile_R=0.8",
                      "--pose", "neck=0,5,0"])
    mixed = parse([*command, "--expr", "mouthSmile_L=0.8", "--expr", "mouthSmile_R=0.8", "--pose", "jaw=10,0,0",
                   "neck=0,5,0"])
    for args in (several, repeated, mixed):
        assert args.expr == ["mouthSmile_L=0.8", "mouthSmile_R=0.8"]
        assert args.pose == ["jaw=10,0,0", "neck=0,5,0"]


def test_several_expr_values_render_as_repeated_flags(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    common = ["render-mesh", "-W", "96", "-H", "96"]
    assert main([*common, "--expr", "mouthSmile_L=1", "mouthSmile_R=1", "--pose", "jaw=10,0,0", "-o", str(a)]) == 0
    assert main([*common, "--expr", "mouthSmile_L=1", "--expr", "mouthSmile_R=1", "--pose", "jaw=10,0,0",
                 "-o", str(b)]) == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


@pytest.mark.parametrize("args, message", [
    (["--expr", "noSuchThing=1"], "unknown expression"),
    (["--expr", "mouthSmile_L=abc"], "NAME=NUMBER"),
    (["--pose", "elbow=1,2,3"], "unknown joint"),
    (["--pose", "jaw=1,2"], "RX,RY,RZ"),
    (["--expr", "mouthSmile_L=1", "me.h5"], "put files before --expr"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(["render-mesh", *args, "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_missing_flame_dir_is_a_user_error(tmp_path, capsys):
    assert main(["head", "--flame", str(tmp_path)]) == 2
    assert "generic_model.pkl" in capsys.readouterr().err


def test_render_default_avatar_png_and_orbit_video(tmp_path):
    import cv2

    png, mp4 = tmp_path / "a.png", tmp_path / "o.mp4"
    assert main(["render", "-W", "96", "-H", "96", "--background", "0,0,0", "-o", str(png)]) == 0
    img = np.asarray(Image.open(png)).astype(float)
    assert (img.sum(-1) > 60).mean() > 0.1  # the avatar is drawn over black
    assert main(["render", "--orbit", "--frames", "6", "-W", "64", "-H", "64", "-o", str(mp4)]) == 0
    cap = cv2.VideoCapture(str(mp4))
    frames = []
    ok, f = cap.read()
    while ok:
        frames.append(f.astype(float))
        ok, f = cap.read()
    assert len(frames) == 6
    assert np.abs(frames[0] - frames[3]).mean() > 3  # the camera went round
    assert not list(tmp_path.glob(".*part*"))


def test_render_with_a_motion_file(tmp_path):
    from savatar.core.drive.motion import Motion, save_motion
    from savatar.core.head.open_head import load_open_head_data

    names = load_open_head_data().expr_names
    t = 4
    pose = np.zeros((t, 15), np.float32)
    pose[:, 6] = np.linspace(0, 0.4, t)  # jaw opens
    save_motion(Motion(10.0, np.zeros((t, len(names)), np.float32), pose, np.zeros((t, 3), np.float32), names),
                tmp_path / "m.npz")
    assert main(["render", "--motion", str(tmp_path / "m.npz"), "-W", "64", "-H", "64", "-o", str(tmp_path / "m.mp4")]) == 0
    assert (tmp_path / "m.mp4").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["render", "missing.h5", "-o", "x.png"], "no such file"),
    (["render", "--orbit", "-o", "x.png"], "video"),
    (["render", "-o", "x.gif"], "output must be"),
    pytest.param(["render", "--backend", "gsplat", "-o", "x.png"], "CUDA",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    (["render", "--background", "red", "-o", "x.png"], "R,G,B"),
    (["render", "--motion", "nothere.npz", "-o", "x.mp4"], "no such file"),
    (["info", "junk.h5"], "junk.h5"),
])
def test_render_and_info_user_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.h5").write_bytes(b"not an avatar")
    assert main(args) == 2
    assert message in last_error_line(capsys)


def test_info_describes_a_saved_avatar(tmp_path, capsys):
    from savatar.core.gaussians.binding import init_avatar
    from savatar.core.head.open_head import load_open_head_data
    from savatar.core.io.avatar_file import save_avatar

    path = tmp_path / "a.h5"
    save_avatar(init_avatar(load_open_head_data(), 500), path, head=load_open_head_data())
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "500" in out and "open-head" in out and "MB" in out


def test_export_ply_writes_the_posed_avatar(tmp_path):
    from plyfile import PlyData

    out = tmp_path / "a.ply"
    assert main(["export-ply", "--expr", "mouthSmile_L=1", "-o", str(out)]) == 0
    el = PlyData.read(str(out))["vertex"]
    assert el.count == 30000 and el.properties[0].name == "x" and "rot_3" in [p.name for p in el.properties]


def test_track_a_real_face_video(tmp_path, capsys):
    import cv2
    import skimage.data

    from savatar.core.drive.motion import load_motion

    img = skimage.data.astronaut()[..., ::-1]
    video = tmp_path / "face.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (512, 512))
    for i in range(6):
        w.write(np.roll(img, 4 * i, axis=1))
    w.release()
    out = tmp_path / "m.npz"
    assert main(["track", str(video), "-o", str(out)]) == 0
    m = load_motion(out)
    assert len(m) == 6 and m.fps == 20.0 and np.isfinite(m.pose).all()
    # The face moved right in the image: the head moves towards +x.
    assert m.translation[-1, 0] > m.translation[0, 0]
    assert "fit residual median" in capsys.readouterr().out
    # The driver's neutral from a given frame; a frame that does not exist is a one-line error.
    assert main(["track", str(video), "--neutral-frame", "3", "-o", str(out)]) == 0
    assert main(["track", str(video), "--neutral-frame", "40", "-o", str(out)]) == 2
    assert "frame 40 has no tracked face" in last_error_line(capsys)


def test_lipsync_and_render_with_audio(tmp_path):
    import shutil
    import subprocess

    from savatar.core.drive.motion import load_motion

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello, how are you"], check=True)
    out = tmp_path / "lip.npz"
    assert main(["lipsync", str(wav), "-o", str(out)]) == 0
    m = load_motion(out)
    assert m.pose[:, 6].max() > 0.1 and m.pose[:, 6].min() < 0.02
    video = tmp_path / "talk.mp4"
    assert main(["render", "--motion", str(out), "--audio", str(wav), "-W", "64", "-H", "64", "-o", str(video)]) == 0
    assert video.stat().st_size > 0
    assert (tmp_path / "talk.wav").exists() or shutil.which("ffmpeg")


@pytest.mark.parametrize("args, message", [
    (["track", "nothere.mp4", "-o", "m.npz"], "no such file"),
    (["track", "junk.h5", "-o", "m.txt"], "must be an .npz"),
    (["lipsync", "nothere.wav", "-o", "m.npz"], "no such file"),
    (["lipsync", "junk.h5", "-o", "m.npz"], "junk.h5"),
])
def test_track_and_lipsync_user_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.h5").write_bytes(b"not audio")
    assert main(args) == 2
    assert message in last_error_line(capsys)


def test_build_with_a_generator_checkpoint(tmp_path):
    import skimage.data
    import torch
    from PIL import Image

    from savatar.core.build.generator import Generator, GeneratorConfig
    from savatar.core.build.generator_train import TrainConfig, save_checkpoint
    from savatar.core.io.avatar_file import load_avatar

    gen_cfg = GeneratorConfig(count=800, image_size=32, features=8, hidden=32)
    g = Generator(gen_cfg)
    ckpt = tmp_path / "gen.pt"
    save_checkpoint(ckpt, g, torch.optim.Adam(g.parameters()), 0, TrainConfig(generator=gen_cfg, checkpoint=str(ckpt)))
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "a.png")
    (tmp_path / "junk.jpg").write_text("no image")
    out = tmp_path / "g.h5"
    assert main(["build", str(tmp_path / "a.png"), str(tmp_path / "junk.jpg"), "--generator", str(ckpt),
                 "-o", str(out)]) == 0
    assert len(load_avatar(out)) == 800  # the checkpoint's layout
    assert main(["build", str(tmp_path / "a.png"), "--generator", str(tmp_path / "none.pt"), "-o", str(out)]) == 2


def _plain_avatar(path):
    from savatar.core.gaussians.binding import init_avatar
    from savatar.core.head.open_head import load_open_head_data
    from savatar.core.io.avatar_file import save_avatar

    save_avatar(init_avatar(load_open_head_data(), 1000), path)
    return path


def test_refine_from_a_video(tmp_path, capsys):
    """A clip of the default avatar rendered by `savatar render` (its orbit camera, not the
    tracker's) is tracked and refined against."""
    from savatar.core.drive.motion import Motion, save_motion
    from savatar.core.head.open_head import load_open_head_data
    from savatar.core.io.avatar_file import load_avatar

    names = load_open_head_data().expr_names
    t = 4
    pose = np.zeros((t, 15), np.float32)
    pose[:, 6] = np.linspace(0, 0.2, t)  # jaw opens
    pose[:, 1] = np.linspace(-0.2, 0.2, t)  # head turns
    save_motion(Motion(10.0, np.zeros((t, len(names)), np.float32), pose, np.zeros((t, 3), np.float32), names),
                tmp_path / "m.npz")
    clip = tmp_path / "clip.mp4"
    assert main(["render", "--motion", str(tmp_path / "m.npz"), "-W", "320", "-H", "320", "--background", "0.4,0.5,0.6",
                 "-o", str(clip)]) == 0
    capsys.readouterr()
    src, out = _plain_avatar(tmp_path / "a.h5"), tmp_path / "out.h5"
    assert main(["refine", str(src), "--video", str(clip), "--fov", "30", "--max-frames", "2", "--size", "96",
                 "--iters", "2", "--backend", "cpu", "-o", str(out)]) == 0
    assert "tracked 2 frames with a face" in capsys.readouterr().out  # frames 0 and 2 of 4
    refined = load_avatar(out)
    assert refined.metadata["refinement"]["iterations"] == 2 and len(refined) == 1000


def test_refine_from_the_sources_a_build_kept(tmp_path, capsys):
    import skimage.data

    from savatar.core.io.avatar_file import load_avatar

    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astronaut.png")
    built, out = tmp_path / "built.h5", tmp_path / "refined.h5"
    assert main(["build", str(tmp_path / "astronaut.png"), "--count", "2000", "-o", str(built)]) == 0
    assert main(["info", str(built)]) == 0
    assert "1 portraits kept for refine --sources" in capsys.readouterr().out
    assert main(["refine", str(built), "--sources", "--iters", "2", "--size", "96", "--backend", "cpu",
                 "-o", str(out)]) == 0
    before, after = load_avatar(built), load_avatar(out)
    assert after.metadata["refinement"]["iterations"] == 2
    (a,), (b,) = before.metadata["sources"], after.metadata["sources"]
    assert a["name"] == b["name"] == "astronaut.png"
    for key in ("image", "mask", "K", "viewmat", "expr", "pose", "translation"):
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("args, message", [
    (["refine", "plain.h5", "--sources", "-o", "o.h5"], "plain.h5: this avatar holds no source portraits"),
    (["refine", "plain.h5", "--video", "missing.mp4", "-o", "o.h5"], "missing.mp4: no such file"),
    (["refine", "plain.h5", "--video", "notes.mp4", "-o", "o.h5"], "notes.mp4: cannot open the video"),
    (["refine", "plain.h5", "--video", "blank.avi", "-o", "o.h5"], "blank.avi: no face found in any of the 3 frames"),
    (["refine", "plain.h5", "--video", "blank.avi", "--size", "8", "-o", "o.h5"], "--size"),
    (["refine", "plain.h5", "--video", "blank.avi", "--stride", "0", "-o", "o.h5"], "--stride"),
])
def test_refine_source_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    from savatar.core.io.video_file import VideoWriter

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "-8")  # the command sets it; keep it from leaking
    _plain_avatar(tmp_path / "plain.h5")
    (tmp_path / "notes.mp4").write_text("not a video\n")
    writer = VideoWriter(tmp_path / "blank.avi", 10, 160, 120)
    for _ in range(3):
        writer.write(np.full((120, 160, 3), 128, np.uint8))
    writer.close()
    assert main(args) == 2
    last = last_error_line(capsys, "savatar refine: ")
    assert message in last
    if "--sources" in args:
        assert "use --images or --video" in last


def test_refine_help_lists_the_frame_options(capsys):
    from savatar.commands import refine as command
    from savatar.core.refine import frame_sources

    assert (command.VIDEO_SIZE, command.VIDEO_MAX_FRAMES, command.VIDEO_FOV_Y_DEG) == (
        frame_sources.VIDEO_SIZE, frame_sources.VIDEO_MAX_FRAMES, frame_sources.VIDEO_FOV_Y_DEG)
    with pytest.raises(SystemExit) as exc:
        main(["refine", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--video", "--sources", "--images", "--size", "--max-frames", "--stride", "--fov", "--no-crop"):
        assert option in out

"""The savatar CLI: help, head description, mesh renders and one-line user errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from savatar.cli import main


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


@pytest.mark.parametrize("args, message", [
    (["--expr", "noSuchThing=1"], "unknown expression"),
    (["--expr", "mouthSmile_L=abc"], "NAME=NUMBER"),
    (["--pose", "elbow=1,2,3"], "unknown joint"),
    (["--pose", "jaw=1,2"], "RX,RY,RZ"),
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
    from savatar.core.motion import Motion, save_motion
    from savatar.core.open_head import load_open_head_data

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
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # progress bars may come before it
    assert message in last and last.startswith("savatar ") and "Traceback" not in err


def test_info_describes_a_saved_avatar(tmp_path, capsys):
    from savatar.core.avatar_file import save_avatar
    from savatar.core.binding import init_avatar
    from savatar.core.open_head import load_open_head_data

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


def test_track_a_real_face_video(tmp_path):
    import cv2
    import skimage.data

    from savatar.core.motion import load_motion

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


def test_lipsync_and_render_with_audio(tmp_path):
    import shutil
    import subprocess

    from savatar.core.motion import load_motion

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
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # progress bars may come before it
    assert message in last and last.startswith("savatar ") and "Traceback" not in err


def test_build_with_a_generator_checkpoint(tmp_path):
    import skimage.data
    import torch
    from PIL import Image

    from savatar.core.avatar_file import load_avatar
    from savatar.core.generator import Generator, GeneratorConfig
    from savatar.core.generator_train import TrainConfig, save_checkpoint

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

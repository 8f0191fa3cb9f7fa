"""`savatar build --video` end to end on tiny synthetic clips (tests/core/build/turning_clip.py):
a loadable avatar that keeps its chosen frames as sources and its refinement; an unreadable
file, a clip without a face, a too short and a too dark one each end with one line naming the
file and the reason, exit 2, and write nothing."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "build"))

from turning_clip import H, W, render_turning_clip  # noqa: E402

from savatar.cli import main  # noqa: E402
from savatar.core.io.avatar_file import load_avatar  # noqa: E402
from savatar.core.io.video_file import VideoWriter  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return render_turning_clip(tmp_path_factory.mktemp("turning") / "turning.mp4")


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    writer = VideoWriter(path, 10, W, H)
    for f in frames:
        writer.write(f)
    writer.close()
    return path


def _one_line_error(capsys, *words: str) -> None:
    """One error line; before it at most progress-bar lines (off a terminal, a bar that ran
    leaves its last status: savatar.commands.progress)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines and all("%|" in line for line in lines[:-1]), lines
    lines = lines[-1:]
    assert lines[0].startswith("savatar build: ")
    for w in words:
        assert w in lines[0], lines[0]


def test_build_from_a_clip_keeps_its_sources(clip, tmp_path, capsys):
    out = tmp_path / "me.h5"
    code = main(["build", "--video", str(clip.path), "-o", str(out), "--iters", "2", "--size", "64",
                 "--count", "3000", "--sources", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    a = load_avatar(out)
    assert len(a) == 3000
    assert a.metadata["refinement"]["iterations"] == 2
    assert "resume" not in a.metadata["refinement"]  # a finished run, not an interrupted one
    names = [str(s["name"]) for s in a.metadata["sources"]]
    assert len(names) == 3 and all(n.startswith("frame ") for n in names)
    frames = {int(n.split()[1]) for n in names}
    assert not frames & set(clip.spoiled)
    for n in names:
        assert f"{n}: ok" in printed
    # Each source is kept as refine --sources reads it: a face crop with its loss mask.
    rec = a.metadata["sources"][0]
    assert rec["image"].shape[2] == 3 and rec["mask"].max() == 255


def test_a_spent_budget_ends_at_once(clip, tmp_path, capsys):
    """--minutes counts from the process's start (here pytest's, long past): the build still
    completes and is written unrefined; refine --minutes then takes exactly the one step begun
    at the deadline and ends as a finished run, never as an interrupted one."""
    built, refined = tmp_path / "built.h5", tmp_path / "refined.h5"
    assert main(["build", "--video", str(clip.path), "-o", str(built), "--minutes", "0.01", "--count", "2000"]) == 0
    assert "not refined: the time budget was used up by building" in capsys.readouterr().out
    assert "refinement" not in load_avatar(built).metadata
    assert main(["refine", str(built), "--sources", "--minutes", "0.01", "--size", "64", "--backend", "cpu",
                 "-o", str(refined)]) == 0
    assert "done at iteration 1," in capsys.readouterr().out
    ref = load_avatar(refined).metadata["refinement"]
    assert ref["iterations"] == 1 and "resume" not in ref


def test_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    assert main(["build", "--video", str(bad), "-o", str(tmp_path / "x.h5")]) == 2
    _one_line_error(capsys, str(bad))
    assert not (tmp_path / "x.h5").exists()


def test_missing_file(tmp_path, capsys):
    assert main(["build", "--video", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "x.h5")]) == 2
    _one_line_error(capsys, "none.mp4", "no such file")


def test_no_face(tmp_path, capsys):
    ramp = np.linspace(40, 200, W, dtype=np.float32)[None, :, None].repeat(H, 0).repeat(3, 2).astype(np.uint8)
    path = _write(tmp_path / "wall.mp4", [ramp] * 15)
    assert main(["build", "--video", str(path), "-o", str(tmp_path / "x.h5")]) == 2
    _one_line_error(capsys, str(path), "no face")
    assert not (tmp_path / "x.h5").exists()


def test_too_short(clip, tmp_path, capsys):
    path = _write(tmp_path / "blink.mp4", clip.frames[:4])
    assert main(["build", "--video", str(path), "-o", str(tmp_path / "x.h5")]) == 2
    _one_line_error(capsys, str(path), "too short")


def test_too_dark(clip, tmp_path, capsys):
    dark = [(f.astype(np.float32) * 0.15).astype(np.uint8) for f in clip.frames]
    path = _write(tmp_path / "dark.mp4", dark)
    assert main(["build", "--video", str(path), "-o", str(tmp_path / "x.h5")]) == 2
    _one_line_error(capsys, str(path))
    assert not (tmp_path / "x.h5").exists()


def test_video_options_need_video(tmp_path, capsys):
    assert main(["build", "a.jpg", "--minutes", "1", "-o", str(tmp_path / "x.h5")]) == 2
    _one_line_error(capsys, "--minutes", "--video")

"""The savatar CLI: help, head description, mesh renders and one-line user errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from savatar.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("head", "render-mesh"):
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

"""The viewer opens a real window (Xvfb on CI), draws the head and exits cleanly."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"),
                                   reason="needs an X display (scripts/test.sh starts Xvfb)")


@needs_display
def test_smoke_run_draws_the_head_and_exits_zero(tmp_path):
    prefix = str(tmp_path / "shot_")
    # Its own settings folder: what other tests (or the user) left there must not move the camera.
    env = {**os.environ, "SAVATAR_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.run([sys.executable, "-m", "savatar.viewer.app", "--smoke", "8", "--size", "320", "320",
                           "--screenshot", prefix], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    img = np.asarray(Image.open(prefix + "stage.png").convert("RGB")).astype(float)
    assert img.shape[:2] == (320, 320)
    background = img[2, 2]
    head = np.abs(img - background).sum(-1) > 30
    assert 0.1 < head.mean() < 0.8  # a head fills a good part of the stage, not all of it
    # ...in the middle of it (splats sorted for one camera and drawn with another land off-centre).
    cols = np.flatnonzero(head[:250].any(0))
    assert abs((cols.min() + cols.max()) / 2 - 160) < 25
    # Skin tones in the middle of the frame: red above blue.
    centre = img[120:200, 120:200].reshape(-1, 3)
    assert (centre[:, 0] > centre[:, 2] + 20).mean() > 0.5


def test_bad_size_is_a_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "savatar.viewer.app", "--size", "0", "10"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--size" in proc.stderr


@pytest.mark.parametrize("display", [None, ":4711"])
def test_no_display_says_what_to_do(display):
    """Without a reachable X display: one line saying so and how to run it, exit 2 (no display is
    needed for this test itself)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display:
        env["DISPLAY"] = display
    proc = subprocess.run([sys.executable, "-m", "savatar.viewer.app"], capture_output=True, text=True,
                          timeout=60, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("savatar-viewer: no display") and "xvfb-run" in lines[0] and "--smoke" in lines[0]
    if display:
        assert display in lines[0]

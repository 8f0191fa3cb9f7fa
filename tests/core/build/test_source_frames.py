"""Choosing source frames from a selfie video (savatar.core.build.source_frames, from_video):
on a synthetic clip of the default avatar turning its head (turning_clip.py) the choice spans the
sharp frames' yaw range and skips the blurred and closed-eye frames, although those are the
widest turns and the most frontal views; head angles against rotations built independently; the
time budget that ends a refinement run, on a clock the test controls."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent))

from turning_clip import render_turning_clip  # noqa: E402

from savatar.core.build.from_video import choose_from_scan, scan_clip  # noqa: E402
from savatar.core.build.source_frames import FrameStats, choose_sources, head_angles  # noqa: E402
from savatar.core.refine.time_budget import TimeBudget  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return render_turning_clip(tmp_path_factory.mktemp("turning") / "turning.mp4")


def test_choice_spans_the_turn_and_skips_blurred_and_closed_eyes(clip):
    scan = scan_clip(clip.path)
    assert [s.index for s in scan.stats] == list(range(len(clip.yaw)))  # a face in every frame
    # The tracked head angles follow the rendered turn (mean identity, so only roughly).
    tracked = np.array([s.yaw for s in scan.stats])
    assert np.corrcoef(tracked, clip.yaw)[0, 1] > 0.95
    choice = choose_from_scan(scan, k=4)
    frames = [scan.stats[i].index for i in choice.chosen]
    assert len(set(frames)) == 4
    assert not set(frames) & set(clip.spoiled), f"chose spoiled frames {set(frames) & set(clip.spoiled)}"
    sharp_yaws = [y for t, y in enumerate(clip.yaw) if t not in clip.spoiled]
    chosen_yaws = [clip.yaw[t] for t in frames]
    assert min(chosen_yaws) == min(sharp_yaws) and max(chosen_yaws) == max(sharp_yaws)
    assert clip.yaw[frames[0]] == 0.0  # the first source is the frontal one
    # Every spoiled frame was recognised for what spoiled it.
    reasons = {scan.stats[i].index: r for i, r in choice.rejected.items()}
    for t, spoil in clip.spoiled.items():
        assert reasons.get(t, "").startswith({"blurred": "blurred", "blink": "eyes closing"}[spoil]), (t, reasons)
    assert set(reasons) == set(clip.spoiled)


def _stats(yaw: float, pitch: float = 0.0, **kw) -> FrameStats:
    values = dict(face_px=200.0, sharpness=100.0, brightness=120.0, eye_open=0.12, mouth_open=0.0)
    values.update(kw)
    return FrameStats(0, yaw, pitch, **values)


def test_choice_prefers_a_closed_mouth_and_stops_when_views_repeat():
    # Two frontal frames, one talking: the closed mouth is the first source. Head angles within
    # a few degrees of each other add no view, so a still head gives one source, not four.
    stats = [_stats(0.5, mouth_open=0.3), _stats(0.0), _stats(1.0), _stats(-1.0, 1.0)]
    choice = choose_sources(stats, k=4)
    assert choice.chosen == [1]
    # Dark and tiny faces are refused with the reason that applies to them.
    bad = choose_sources([_stats(0.0, brightness=10.0)] * 3, k=2)
    assert not bad.chosen and bad.reason.startswith("no usable frame: too dark")
    assert choose_sources([_stats(0.0, face_px=30.0)], k=2).reason.startswith("no usable frame: face too small")


@pytest.mark.parametrize("rotvec_deg", [(0, 20, 0), (-15, 0, 0), (10, -30, 5), (0, 0, 0)])
def test_head_angles_of_a_rotation(rotvec_deg):
    rot = Rotation.from_rotvec(np.radians(rotvec_deg))
    forward = rot.apply([0.0, 0.0, 1.0])
    yaw, pitch = head_angles(rot.as_rotvec())
    # The face direction rebuilt from the two angles is the rotated forward axis.
    y, p = math.radians(yaw), math.radians(pitch)
    assert np.allclose([math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y)], forward, atol=1e-9)


def test_time_budget_ends_the_schedule_at_the_deadline():
    clock = SimpleNamespace(now=0.0)
    refiner = SimpleNamespace(iteration=0, config=SimpleNamespace(iterations=1000))
    budget = TimeBudget(deadline=30.0, clock=lambda: clock.now)
    step_s = [2.0, 1.0] + [0.25] * 1000  # slow first steps (compilation), then a steady pace
    planned = []
    while refiner.iteration < refiner.config.iterations:
        budget(refiner)  # as Refiner.step runs its pre-step hooks
        clock.now += step_s[refiner.iteration]
        refiner.iteration += 1
        planned.append(refiner.config.iterations)
    # 27 s at 4 steps a second after the 3 s of slow steps, then the step begun at the deadline:
    # planned that way long before the end.
    assert budget.expired
    assert 30.0 <= clock.now <= 30.0 + 0.25
    assert refiner.iteration == 2 + 27 * 4 + 1
    assert abs(planned[20] - refiner.iteration) <= 1
    # A cap wins over the time left.
    refiner = SimpleNamespace(iteration=0, config=SimpleNamespace(iterations=5))
    clock.now = 0.0
    budget = TimeBudget(deadline=30.0, max_iterations=5, clock=lambda: clock.now)
    while refiner.iteration < refiner.config.iterations:
        budget(refiner)
        clock.now += 0.25
        refiner.iteration += 1
    assert refiner.iteration == 5 and not budget.expired

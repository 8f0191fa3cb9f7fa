"""Issue 7: on held-out EXTREME expressions (coefficients 0.8-1.0, jaw 0.3 rad) absent from a
mild, near-frontal training clip, the regularized refinement scores higher PSNR than the
unregularized one. The experiment is bench/bench_refine_extreme.py's (its docstring gives the
setup and the mechanism), shrunk to run in under a minute; default anti-spike weights."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from bench.bench_refine_extreme import experiment  # noqa: E402


def test_regularization_wins_on_extreme_held_out_expressions():
    out = experiment(count=1500, size=48, iterations=100, train_frames=6, seed=0)
    print(out)
    start = out["psnr_extreme_start_db"]
    assert out["psnr_extreme_unregularized_db"] > start + 10.0, out  # both runs do learn
    assert out["psnr_extreme_regularized_db"] > out["psnr_extreme_unregularized_db"] + 1.0, out
    # The advantage is about extremes: on mild held-out frames (the training distribution) the
    # two runs are much closer.
    assert out["psnr_extreme_gain_db"] > out["psnr_mild_gain_db"] + 0.5, out
    assert out["spikes_regularized_fraction"] < 0.1 < out["spikes_unregularized_fraction"], out

"""Issue 7: held-out EXTREME expressions (coefficients 0.8-1.0, jaw 0.3 rad) absent from the
mild training motion (|coefficients| <= 0.3, jaw <= 0.1 rad); the experiment is
bench/bench_refine_extreme.py's, shrunk to run in well under a minute.

What this asserts is what was measured to hold: both refinements raise the extreme held-out
PSNR from the perturbed start, the regularized one keeps far fewer Gaussians over the anti-spike
thresholds, and it costs at most a fraction of a dB on the extremes. It does NOT assert that the
regularized PSNR is higher: at this scale (and in the 150-iteration bench: 29.73 vs 29.80 dB) it
was not, so the issue's "regularized scores higher on extremes" is not shown yet.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.bench_refine_extreme import experiment  # noqa: E402


def test_extreme_expressions_regularized_vs_unregularized():
    out = experiment(count=1000, size=32, iterations=20, train_frames=3, extremes=2)
    print(out)
    start = out["psnr_extreme_start_db"]
    assert out["psnr_extreme_regularized_db"] > start + 1.0, out
    assert out["psnr_extreme_unregularized_db"] > start + 1.0, out
    assert out["spike_fraction_regularized"] < out["spike_fraction_unregularized"], out
    assert out["psnr_extreme_gain_db"] > -0.5, out

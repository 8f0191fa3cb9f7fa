"""Speech-driven mouth: audio analysis cost per 10 ms hop (the live budget is 10 ms a hop)."""
from __future__ import annotations

import numpy as np

from bench import entry, time_ms

SR = 16000


def _speech_like(seconds: float = 1.0) -> np.ndarray:
    """(N,) float32: a 120 Hz pulse train through two vowel-like resonances, syllable-gated, so
    every code path (voiced frames with formants, dips, silence) is exercised."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    src = np.zeros(n)
    src[:: SR // 120] = 1.0
    src += 0.01 * rng.standard_normal(n)
    for f, bw in ((700.0, 80.0), (1200.0, 100.0)):
        r = np.exp(-np.pi * bw / SR)
        src = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * f / SR), r * r], src)
    gate = (np.sin(2 * np.pi * 4.0 * np.arange(n) / SR) > -0.3).astype(float)
    x = src * gate
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@entry("lipsync")
def lipsync_bench() -> dict[str, float]:
    from savatar.core.drive.lipsync import AudioAnalyzer, LipSync
    from savatar.core.head.open_head import load_open_head_data

    x = _speech_like(1.0)
    hops = len(x) // 160
    names = load_open_head_data().expr_names
    out = {}
    out["analysis_per_hop_ms"] = time_ms(lambda: AudioAnalyzer(SR).push(x), repeat=7, warmup=1) / hops
    out["lipsync_per_hop_ms"] = time_ms(lambda: LipSync(names, SR).push(x), repeat=7, warmup=1) / hops

    def live() -> None:  # 10 ms microphone callbacks: the streaming overhead included
        ls = LipSync(names, SR)
        for i in range(0, len(x), 160):
            ls.push(x[i:i + 160])

    out["lipsync_live_160_per_hop_ms"] = time_ms(live, repeat=7, warmup=1) / hops
    return out

"""Speech-driven mouth: audio analysis cost per 10 ms hop (the live budget is 10 ms a hop), the
learned mouth-opening model's share of it (features and network, target well under 1 ms), and
the live latency from the microphone to the mouth (target: under 60 ms)."""
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
    out["lipsync_rule_only_per_hop_ms"] = time_ms(lambda: LipSync(names, SR, mouth_model=None).push(x), repeat=7,
                                                  warmup=1) / hops
    out.update(_mouth_model(x))
    out.update(_latency(names))
    return out


def _mouth_model(x: np.ndarray) -> dict[str, float]:
    """CPU per hop of the learned model alone: its features from an analysed frame, and one step."""
    from savatar.core.drive.mouth_regressor import MouthRegressor, hop_features
    from savatar.core.drive.speech_features import AudioAnalyzer

    frames = AudioAnalyzer(SR).push(x)
    model = MouthRegressor.load()

    def run() -> None:
        model.reset()
        for f in frames:
            model.step(hop_features(f))

    return {"mouth_model_per_hop_ms": time_ms(run, repeat=7, warmup=1) / len(frames),
            "mouth_model_networks": float(model.n_models)}


def _latency(names: list[str]) -> dict[str, float]:
    """Microphone to mouth, live: a vowel starts after silence; the mouth is there when the jaw
    has made half its way to the vowel's opening. Counted: the capture block (10 ms, the sound
    card hands samples over a block at a time), the audio time from the onset to the end of the
    hop whose frame crosses half (analysis window and smoothing), and the CPU time of that push."""
    import time

    from savatar.core.drive.lipsync import LipSync

    x = _speech_like(1.0)
    voiced = np.flatnonzero(np.abs(x) > 1e-3)
    onset = int(voiced[0])
    block = 160
    ls = LipSync(names, SR)
    pushed, times, jaws, cpu = 0, [], [], []
    sig = np.concatenate([np.zeros(SR // 2, np.float32), x[onset:onset + SR // 4]])
    for i in range(0, len(sig), block):
        t0 = time.perf_counter()
        frames = ls.push(sig[i:i + block])
        cpu.append((time.perf_counter() - t0) * 1e3)
        pushed += block
        for f in frames:
            times.append(pushed / SR)  # the frame exists once its hop's last sample has arrived
            jaws.append(f.jaw)
    jaws, times = np.array(jaws), np.array(times)
    final = float(jaws[times < 0.5 + 0.13].max())  # the first syllable lasts 137 ms
    ready = times[np.flatnonzero(jaws > 0.5 * final)[0]]
    algorithmic = (ready - 0.5) * 1e3
    return {"onset_to_half_open_audio_ms": algorithmic,
            "mic_to_mouth_ms": block / SR * 1e3 + algorithmic + float(np.median(cpu))}

"""The learned audio -> mouth-opening model: its bundled weights, its streaming arithmetic against
an independent reference (torch's causal convolutions, as the training script fits them), its
budget, and what it does on controlled signals."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.signal import lfilter

from savatar.core.drive.lipsync import LipSync
from savatar.core.drive.mouth_regressor import ASSET, N_FEATURES, MouthRegressor, hop_features
from savatar.core.drive.speech_features import AudioAnalyzer

SR = 16000
# Clips that must stay out of training: the dev speech clip and the other speakers' clips that
# the README reports as held out.
HELD_OUT = ("talk_speech", "retalking_1", "retalking_2", "retalking_4", "retalking_5")


def random_weights(rng: np.random.Generator, m: int = 3, h1: int = 5, h2: int = 4, context: int = 6,
                   stride: int = 2) -> dict[str, np.ndarray]:
    return {"mean": rng.normal(size=N_FEATURES).astype(np.float32),
            "scale": rng.uniform(0.5, 2.0, N_FEATURES).astype(np.float32),
            "w1": rng.normal(0, 0.3, (m, h1, N_FEATURES)), "b1": rng.normal(0, 0.3, (m, h1)),
            "w2": rng.normal(0, 0.3, (m, h2, context * h1)), "b2": rng.normal(0, 0.3, (m, h2)),
            "w3": rng.normal(0, 1.0, (m, h2)), "b3": rng.normal(0, 1.0, m),
            "context": np.int64(context), "stride": np.int64(stride)}


def test_bundled_model_loads_and_is_small():
    with np.load(ASSET) as data:
        trained_on = [str(n) for n in data["trained_on"]]
        assert float(data["train_seconds"]) > 120.0  # minutes of real speech, not a few clips
    model = MouthRegressor.load()
    n_weights = sum(getattr(model, k).size for k in ("_w1", "_b1", "_w2", "_b2", "_w3", "_b3"))
    assert 1000 < n_weights < 50000, n_weights
    assert not set(trained_on) & set(HELD_OUT), sorted(set(trained_on) & set(HELD_OUT))
    assert len(trained_on) >= 20


def test_streaming_equals_batch_and_shapes():
    rng = np.random.default_rng(0)
    model = MouthRegressor(random_weights(rng))
    x = rng.normal(size=(80, N_FEATURES)).astype(np.float32)
    batch = model.run(x)
    assert batch.shape == (80,)
    model.reset()
    stream = np.array([model.step(v) for v in x])
    np.testing.assert_allclose(stream, batch, atol=1e-5)
    assert model.run(np.zeros((0, N_FEATURES), np.float32)).shape == (0,)


def test_matches_torch_causal_convolutions():
    """The layout the training script writes (conv2's taps oldest first) read back by numpy
    gives what torch's Conv1d stack computes, network by network, averaged."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w = random_weights(rng)
    m, h1 = w["w1"].shape[:2]
    h2, k, s = w["w2"].shape[1], int(w["context"]), int(w["stride"])
    x = rng.normal(size=(50, N_FEATURES)).astype(np.float32)
    outs = []
    for i in range(m):
        c1 = torch.nn.Conv1d(N_FEATURES, h1, 1)
        c2 = torch.nn.Conv1d(h1, h2, k, dilation=s)
        c3 = torch.nn.Conv1d(h2, 1, 1)
        with torch.no_grad():
            c1.weight.copy_(torch.tensor(w["w1"][i][:, :, None]))
            c1.bias.copy_(torch.tensor(w["b1"][i]))
            # (h2, k * h1) taps-major -> Conv1d's (h2, h1, k)
            c2.weight.copy_(torch.tensor(w["w2"][i].reshape(h2, k, h1).transpose(0, 2, 1).copy()))
            c2.bias.copy_(torch.tensor(w["b2"][i]))
            c3.weight.copy_(torch.tensor(w["w3"][i][None, :, None]))
            c3.bias.copy_(torch.tensor([w["b3"][i]]))
            xt = torch.tensor(((x - w["mean"]) / w["scale"]).T[None], dtype=torch.float32)
            h = torch.tanh(c1(xt))
            h = torch.cat([h[:, :, :1].expand(-1, -1, (k - 1) * s), h], dim=2)
            outs.append(c3(torch.tanh(c2(h)))[0, 0].numpy())
    np.testing.assert_allclose(MouthRegressor(w).run(x), np.mean(outs, axis=0), atol=1e-4)


def test_bad_weights_give_clear_errors(tmp_path):
    rng = np.random.default_rng(2)
    w = random_weights(rng)
    del w["w2"]
    with pytest.raises(ValueError, match="lack 'w2'"):
        MouthRegressor(w)
    w = random_weights(rng)
    w["w1"] = w["w1"][:, :, :5]
    with pytest.raises(ValueError, match="do not fit"):
        MouthRegressor(w)
    with pytest.raises(FileNotFoundError, match="no mouth regressor weights"):
        MouthRegressor.load(tmp_path / "missing.npz")


def vowel_a(n: int, rng: np.random.Generator) -> np.ndarray:
    """A 120 Hz voice through /a/'s formants (730, 1090, 2440 Hz), at -26 dBFS."""
    src = np.zeros(n)
    src[:: SR // 120] = 1.0
    src = lfilter([1.0], [1, -1.9, 0.9025], src) + 1e-3 * rng.standard_normal(n)
    for f, bw in ((730, 80), (1090, 90), (2440, 120)):
        r = np.exp(-np.pi * bw / SR)
        c = 2 * r * np.cos(2 * np.pi * f / SR)
        src = lfilter([1 - c + r * r], [1, -c, r * r], src)
    src = np.diff(src, prepend=0.0)
    return (0.05 * src / np.sqrt(np.mean(src ** 2))).astype(np.float32)


def test_vowel_opens_more_than_silence():
    """Silence, then a sustained open vowel: the bundled model reads the vowel as a more open
    mouth than the silence before it, and LipSync's jaw opens on it and is shut before it."""
    rng = np.random.default_rng(3)
    quiet = (1e-4 * rng.standard_normal(SR)).astype(np.float32)
    x = np.concatenate([quiet, vowel_a(SR // 2, rng), quiet[: SR // 4]])
    frames = AudioAnalyzer(SR).push(x)
    z = MouthRegressor.load().run(np.stack([hop_features(f) for f in frames]))
    t = np.array([f.time_s for f in frames])
    silent, voiced = (t > 0.4) & (t < 0.95), (t > 1.15) & (t < 1.45)
    assert np.median(z[voiced]) > np.median(z[silent]) + 0.5, (np.median(z[voiced]), np.median(z[silent]))
    jaw = np.array([f.jaw for f in LipSync([], SR).push(x)])
    assert np.median(jaw[voiced]) > 0.1 and jaw[silent].max() < 0.01, (np.median(jaw[voiced]), jaw[silent].max())


def test_model_costs_well_under_a_millisecond_a_hop():
    """The live budget: features and the model of one 10 ms hop, far under 1 ms of CPU (bench
    lipsync measures it precisely; the bound here leaves room for a loaded test machine)."""
    rng = np.random.default_rng(4)
    frames = AudioAnalyzer(SR).push(vowel_a(SR, rng))
    model = MouthRegressor.load()
    t0 = time.perf_counter()
    for f in frames:
        model.step(hop_features(f))
    per_hop_ms = (time.perf_counter() - t0) / len(frames) * 1e3
    assert per_hop_ms < 1.0, per_hop_ms


def test_hop_features_are_gain_invariant_in_shape():
    """The log-mel part is the spectrum's shape: a 20 dB louder recording of the same sound gives
    the same band pattern (only the loudness features move)."""
    rng = np.random.default_rng(5)
    x = vowel_a(SR // 2, rng)
    a = AudioAnalyzer(SR).push(x)[30]
    b = AudioAnalyzer(SR).push(10 * x)[30]
    fa, fb = hop_features(a), hop_features(b)
    assert fa.shape == (N_FEATURES,)
    np.testing.assert_allclose(fa[:24], fb[:24], atol=1e-3)
    assert abs((b.loudness_db - a.loudness_db) - 20.0) < 0.1

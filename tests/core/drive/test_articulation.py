"""Mouth shape from the spectrum, on controlled signals: vowels synthesized with known formants
(a glottal pulse train, or noise for a whisper, through formant resonators), closures and noise.

Formants are Peterson & Barney's adult male averages; other voices scale them (a shorter vocal
tract raises every formant) and raise the pitch. The vowels are spoken in a row, as a speaker
would, so the speaker normalisation sees a vowel space; the first round is the warm-up and the
second is judged.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve, lfilter

from savatar.core.drive.formants import FormantEstimator
from savatar.core.drive.lipsync import LipSync
from savatar.core.head.open_head import load_open_head_data

SR = 16000
VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
          "o": (570, 840, 2410), "u": (300, 870, 2240)}
# (f0 Hz, formant scale, whisper): a man, a woman, a child-like high voice, a whispering man.
VOICES = {"low": (110.0, 1.0, False), "high": (220.0, 1.17, False), "child": (300.0, 1.3, False),
          "whisper": (110.0, 1.0, True)}


def resonator(x: np.ndarray, f: float, bw: float) -> np.ndarray:
    """Second-order resonance at f Hz with bandwidth bw, unit gain at 0 Hz (Klatt's)."""
    r = np.exp(-np.pi * bw / SR)
    c = 2 * r * np.cos(2 * np.pi * f / SR)
    return lfilter([1 - c + r * r], [1, -c, r * r], x)


def source(n: int, f0: float, whisper: bool, rng: np.random.Generator) -> np.ndarray:
    if whisper:  # turbulence at the glottis: noise, tilted like breath
        return lfilter([1.0], [1, -0.95], rng.standard_normal(n))
    pulses = np.zeros(n)
    pulses[np.arange(0, n, SR / f0).astype(int)] = 1.0
    return lfilter([1.0], [1, -1.9, 0.9025], pulses)  # glottal pulses fall at -12 dB/octave


def vowel(formants, f0: float, scale: float, whisper: bool, rng: np.random.Generator, dur: float = 0.35,
          rms: float = 0.05) -> np.ndarray:
    n = int(dur * SR)
    x = source(n, f0, whisper, rng)
    for f, bw in zip(list(formants) + [3500.0], (80, 90, 120, 150)):
        x = resonator(x, f * scale, bw)
    x = np.diff(x, prepend=0.0)  # radiation at the lips
    ramp = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / (0.02 * SR))
    return rms * x * ramp / np.sqrt(np.mean(x ** 2))


def say(sequence: list[np.ndarray], gap_s: float = 0.08) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The pieces in a row after 0.3 s of silence, gap_s apart: samples and each piece's span (s)."""
    parts, spans, n = [np.zeros(int(0.3 * SR))], [], int(0.3 * SR)
    for x in sequence:
        spans.append((n / SR, (n + len(x)) / SR))
        parts += [x, np.zeros(int(gap_s * SR))]
        n += len(x) + int(gap_s * SR)
    return np.concatenate(parts).astype(np.float32), spans


@pytest.fixture(scope="module")
def names() -> list[str]:
    return load_open_head_data().expr_names


def run(x: np.ndarray, names: list[str]):
    """(times, jaw, expr (T, E), visemes) of LipSync over x."""
    frames = LipSync(names, SR).push(np.concatenate([x, np.zeros(SR // 4, np.float32)]))
    return (np.array([f.time_s for f in frames]), np.array([f.jaw for f in frames]),
            np.stack([f.expr for f in frames]), [f.viseme for f in frames])


def vowel_medians(x, spans, order, names):
    """Median jaw, lip rounding (mouthPucker) and spreading (mouthStretch_L) inside each vowel of
    the second round (its middle: 100 ms after the onset, which the smoothing needs, to 50 ms
    before the end)."""
    t, jaw, expr, _ = run(x, names)
    pucker, stretch = expr[:, names.index("mouthPucker")], expr[:, names.index("mouthStretch_L")]
    out = {}
    for v, (a, b) in zip(order[len(order) // 2:], spans[len(order) // 2:]):
        sel = (t > a + 0.1) & (t < b - 0.05)
        out[v] = (float(np.median(jaw[sel])), float(np.median(pucker[sel])), float(np.median(stretch[sel])))
    return out


def check_vowel_space(m: dict, close_ratio: float = 2.0, rounded: str = "ou") -> None:
    jaw = {v: m[v][0] for v in m}
    assert jaw["a"] > jaw["e"] > jaw["i"], jaw  # open vowels open the jaw
    # /i/ and /u/ barely: a clean /a/ opens at least twice as far, a noisy or reverberant one
    # (whose close vowels lose a formant now and then) at least 1.5 times.
    assert jaw["a"] > close_ratio * jaw["i"] and jaw["a"] > close_ratio * jaw["u"], jaw
    for r in rounded:
        for spread in "aei":  # back rounded vowels round the lips, the others do not (as much)
            assert m[r][1] > m[spread][1] + 0.15, (r, spread, m)
    for r in "ao" + rounded:  # front vowels spread the lips, /i/ clearly, /e/ less
        assert m["i"][2] > m[r][2] + 0.15, ("i", r, m)
        assert m["e"][2] > m[r][2], ("e", r, m)


@pytest.mark.parametrize("voice", list(VOICES))
def test_vowel_jaw_and_lips_follow_formants(voice, names):
    f0, scale, whisper = VOICES[voice]
    rng = np.random.default_rng(0)
    order = list("aeiou") * 2
    x, spans = say([vowel(VOWELS[v], f0, scale, whisper, rng) for v in order])
    check_vowel_space(vowel_medians(x, spans, order, names))


@pytest.mark.parametrize("condition", ["noise_20db", "reverb_0.4s", "quiet_-40dbfs", "loud_-6dbfs"])
def test_vowel_space_survives_real_recording_conditions(condition, names):
    rng = np.random.default_rng(1)
    order = list("aeiou") * 2
    # In a room the 80 ms gaps between vowels fill with reverberation; a talker pauses longer
    # now and then, and the noise floor is learned in those pauses.
    x, spans = say([vowel(VOWELS[v], 110.0, 1.0, False, rng) for v in order],
                   gap_s=0.25 if condition.startswith("reverb") else 0.08)
    if condition == "noise_20db":  # a fan's broadband noise 20 dB under the vowels, throughout
        x = x + (0.05 / 10) * rng.standard_normal(len(x)).astype(np.float32)
    elif condition == "reverb_0.4s":  # a room: exponentially decaying noise, RT60 0.4 s
        n = int(0.4 * SR)
        h = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
        h[0] = 4.0  # the direct sound
        x = fftconvolve(x, h)[: len(x)].astype(np.float32)
        x *= 0.05 / np.sqrt(np.mean(x[int(0.3 * SR):] ** 2))
    else:  # a whisper-quiet or a loud talker: loudness scales, the shape must not change
        dbfs = float(condition.split("_")[1][:-len("dbfs")])
        x = (x * 10 ** (dbfs / 20) / 0.05).astype(np.float32)
    # /u/'s weak second formant (870 Hz, 25 dB under its first) drowns in broadband noise 20 dB
    # down, and LPC then reads the third as F2: only /o/ is required to round there.
    check_vowel_space(vowel_medians(x, spans, order, names), close_ratio=1.5,
                      rounded="o" if condition == "noise_20db" else "ou")


@pytest.mark.parametrize("consonant", ["p", "b", "m"])
def test_bilabial_between_vowels_closes_the_lips(consonant, names):
    """/a C a/: a silent closure (/p/), a voice bar (/b/: voicing under 400 Hz, 25 dB down) or a
    nasal murmur (/m/: a 250 Hz resonance, 15 dB down), 90 ms long, between two /a/."""
    rng = np.random.default_rng(2)
    a = vowel(VOWELS["a"], 110.0, 1.0, False, rng)
    n = int(0.09 * SR)
    if consonant == "p":
        mid = np.zeros(n)
    elif consonant == "b":
        mid = resonator(source(n, 110.0, False, rng), 150.0, 100.0)
        mid *= 0.05 * 10 ** (-25 / 20) / np.sqrt(np.mean(mid ** 2))
    else:
        mid = resonator(resonator(source(n, 110.0, False, rng), 250.0, 60.0), 1100.0, 300.0)
        mid *= 0.05 * 10 ** (-15 / 20) / np.sqrt(np.mean(mid ** 2))
    x, spans = say([np.concatenate([a, mid, a])])
    t, jaw, expr, visemes = run(x, names)
    t0 = spans[0][0] + len(a) / SR
    closure = (t > t0 + 0.03) & (t < t0 + 0.09)
    vowel1 = (t > spans[0][0] + 0.15) & (t < t0 - 0.03)
    assert jaw[vowel1].min() > 0.2, jaw[vowel1].min()  # the /a/ is open
    assert jaw[closure].min() < 0.05, (consonant, jaw[closure].min())
    press = expr[:, names.index("mouthPress_L")]
    assert press[closure].max() > 0.4, (consonant, press[closure].max())
    assert "PP" in {visemes[i] for i in np.flatnonzero(closure)}


@pytest.mark.parametrize("dbfs", [-50.0, -30.0, -15.0])
def test_white_noise_alone_does_not_open_the_mouth(dbfs, names):
    x = (10 ** (dbfs / 20) * np.random.default_rng(3).standard_normal(3 * SR)).astype(np.float32)
    t, jaw, _, _ = run(x, names)
    # Before the noise floor is learned (the first quarter second) the noise may read as a
    # fricative, whose jaw is nearly closed; the avatar's lips stay sealed below 0.05 rad.
    assert jaw.max() < 0.05, jaw.max()
    assert jaw[t > 0.5].max() < 0.01, jaw[t > 0.5].max()


@pytest.mark.parametrize("v", list(VOWELS))
def test_lpc_finds_the_synthesized_formants(v):
    """F1 and F2 of a steady vowel within 15 % of the resonators'. LPC leans towards the nearest
    harmonic of the voice: /i/'s 270 Hz F1 between the 220 and 330 Hz harmonics of a 110 Hz voice
    reads 300 Hz (measured), 11 % high."""
    from savatar.core.drive.speech_features import AudioAnalyzer

    x = vowel(VOWELS[v], 110.0, 1.0, False, np.random.default_rng(4), dur=0.5).astype(np.float32)
    an = AudioAnalyzer(SR)
    frames = an.push(np.concatenate([np.zeros(SR // 4, np.float32), x]))
    f1 = np.median([f.f1 for f in frames[40:] if f.sonorant])
    f2 = np.median([f.f2 for f in frames[40:] if f.sonorant])
    assert abs(f1 / VOWELS[v][0] - 1) < 0.15 and abs(f2 / VOWELS[v][1] - 1) < 0.15, (v, f1, f2)
    assert isinstance(an.formants, FormantEstimator)


def test_quieter_word_is_not_a_closure(names):
    """An /a/ that fades by 26 dB over 0.8 s (an unstressed word after a stressed one) keeps
    the mouth open: only a fast drop is a stop closure, not being far under the loudest syllable."""
    rng = np.random.default_rng(5)
    a = vowel(VOWELS["a"], 110.0, 1.0, False, rng, dur=1.2)
    n = len(a)
    fade = np.ones(n)
    fade[int(0.3 * SR):int(1.1 * SR)] = 10 ** (np.linspace(0, -26, int(1.1 * SR) - int(0.3 * SR)) / 20)
    fade[int(1.1 * SR):] = 10 ** (-26 / 20)
    x, spans = say([(a * fade).astype(np.float32)])
    t, jaw, _, visemes = run(x, names)
    t0 = spans[0][0]
    quiet_end = (t > t0 + 0.95) & (t < t0 + 1.15)  # 20-26 dB under the start
    assert "PP" not in {visemes[i] for i in np.flatnonzero(quiet_end)}
    assert jaw[quiet_end].min() > 0.1, jaw[quiet_end].min()

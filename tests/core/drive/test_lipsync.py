"""Speech-driven mouth on real speech synthesized by espeak-ng (skipped when it is missing)."""
from __future__ import annotations

import builtins
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from savatar.core.drive import lipsync
from savatar.core.drive.lipsync import (AudioUnavailableError, LipSync, lipsync_file, open_input_stream, read_audio,
                                        resample)
from savatar.core.drive.motion import load_motion, save_motion
from savatar.core.head.open_head import load_open_head_data

SR = 16000
GAP_S = 0.5


def speak(text: str, tmp_path: Path) -> np.ndarray:
    """(N,) float32 at SR: espeak-ng's rendering of text, with its leading/trailing silence cut."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng; scripts/setup.sh installs it)")
    out = tmp_path / f"say_{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-w", str(out), text], check=True, capture_output=True)
    x, sr = read_audio(out)
    x = resample(x, sr, SR)
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    return x[loud[0]:loud[-1] + 1]


def write_wav(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    wavfile.write(str(path), sr, (np.clip(x, -1, 1) * 32767).astype(np.int16))
    return path


def frame_db(x: np.ndarray, times: np.ndarray, win_s: float = 0.025) -> np.ndarray:
    """RMS dB of x in windows of win_s centred on times: (T,)."""
    h = int(win_s * SR) // 2
    out = np.empty(len(times))
    for i, t in enumerate(times):
        c = int(round(t * SR))
        seg = x[max(0, c - h):c + h]
        out[i] = 10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-12) if len(seg) else -120.0
    return out


@pytest.fixture(scope="module")
def names() -> list[str]:
    return load_open_head_data().expr_names


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    """Three sentences separated by exactly GAP_S of digital silence: (samples, gaps [(t0, t1)])."""
    tmp = tmp_path_factory.mktemp("speech")
    parts = [speak(t, tmp) for t in ("Hello there, how are you doing today?",
                                     "The quick brown fox jumps over the lazy dog.",
                                     "Speech drives the mouth of my avatar.")]
    gap = np.zeros(int(GAP_S * SR), np.float32)
    pieces, gaps, n = [], [], 0
    for i, p in enumerate(parts):
        if i:
            pieces.append(gap)
            gaps.append((n / SR, (n + len(gap)) / SR))
            n += len(gap)
        pieces.append(p)
        n += len(p)
    x = np.concatenate(pieces)
    return x, gaps, write_wav(tmp / "sentences.wav", x)


@pytest.mark.parametrize("noise_dbfs", [None, -45.0])
def test_jaw_closed_in_silent_gaps(sentences, names, tmp_path, noise_dbfs):
    x, gaps, path = sentences
    if noise_dbfs is not None:
        # A microphone's hiss throughout: the adaptive floor must learn it, and hiss in the gaps
        # (flat, high-frequency) must not read as a fricative.
        noise = np.random.default_rng(0).standard_normal(len(x)).astype(np.float32) * 10 ** (noise_dbfs / 20)
        path = write_wav(tmp_path / "noisy.wav", x + noise)
    m = lipsync_file(path, names, fps=100)
    t = np.arange(len(m)) / m.fps
    jaw = m.pose[:, 6]
    assert jaw.max() > 0.2  # it does speak
    for t0, t1 in gaps:
        # Edges: silence is detected within one window (25 ms) and the jaw then closes with the
        # 12 ms closure time constant (0.35 rad -> 0.03 rad in 30 ms); at the far edge the
        # centred window sees the next sentence 12.5 ms early and the attack starts. File mode
        # shows each sound MOUTH_LEAD_S early (the mouth opens before the vowel is heard).
        lead = lipsync.MOUTH_LEAD_S
        inside = (t > t0 + 0.1 - lead) & (t < t1 - 0.02 - lead)
        assert jaw[inside].max() < 0.03, (t0, t1, jaw[inside].max())


@pytest.mark.parametrize("word", ["papa", "mama", "baby"])
def test_jaw_near_closed_on_bilabial_closure(word, tmp_path, names):
    x = speak(word, tmp_path)
    ls = LipSync(names, SR)
    frames = ls.push(np.concatenate([x, np.zeros(SR // 4, np.float32)]))
    t = np.array([f.time_s for f in frames])
    jaw = np.array([f.jaw for f in frames])
    db = frame_db(x, t)
    # The two syllables are the two runs of frames within 10 dB of the loudest; the closure is
    # the quietest frame between them (the waveform's own energy dip, independent of the code).
    loud = np.flatnonzero(db > db.max() - 10)
    split = np.flatnonzero(np.diff(loud) > 1)
    assert len(split) >= 1, f"{word}: expected two syllables in the energy contour"
    a, b = loud[split[0]], loud[split[0] + 1]
    dip = a + int(np.argmin(db[a:b + 1]))
    # The jaw lags the acoustics by the 25 ms window plus the 12 ms closure time constant, and
    # espeak's closures are short (30-60 ms): look for the low point from the dip up to 40 ms
    # after it. "Near closed": under 0.06 rad (3.4 degrees; a loud vowel opens it to ~0.3) and
    # under a third of the opening of the syllables around it.
    near = (t >= t[dip] - 0.01) & (t <= t[dip] + 0.04)
    vowel_open = min(jaw[loud[:split[0] + 1]].max(), jaw[loud[split[0] + 1:]].max())
    assert jaw[near].min() < 0.06, (word, jaw[near].min())
    assert jaw[near].min() < vowel_open / 3, (word, jaw[near].min(), vowel_open)
    visemes = {frames[i].viseme for i in np.flatnonzero(near)}
    assert "PP" in visemes, (word, visemes)


def test_sustained_vowel_opens_jaw(tmp_path, names):
    x = speak("aaaaaaaaaaah", tmp_path)
    frames = LipSync(names, SR).push(x)
    jaw = np.array([f.jaw for f in frames])
    mid = slice(len(frames) // 4, 3 * len(frames) // 4)
    assert np.median(jaw[mid]) > 0.25, np.median(jaw[mid])
    vis = [f.viseme for f in frames[mid]]
    # espeak's long /a/ wavers between F1 600 and 860 Hz: an open vowel throughout, mostly "aa".
    assert max(set(vis), key=vis.count) == "aa" and sum(v in ("aa", "E", "oh") for v in vis) > 0.8 * len(vis)
    # The open vowel drops the lower lip, a shape looked up by name in the model's basis.
    assert frames[len(frames) // 2].expr[names.index("mouthLowerDown_L")] > 0.1


def test_jaw_follows_speech_envelope(sentences, names):
    x, _, path = sentences
    m = lipsync_file(path, names, fps=30)
    t = np.arange(len(m)) / m.fps
    # Envelope: RMS over 25 ms every 10 ms, smoothed over 50 ms, resampled to the motion's frames
    # (frame i shows the sound at i / fps + MOUTH_LEAD_S).
    t100 = np.arange(0, len(x) / SR, 0.01)
    rms = np.sqrt(10 ** (frame_db(x, t100) / 10))
    env = np.interp(t + lipsync.MOUTH_LEAD_S, t100, np.convolve(rms, np.ones(5) / 5, mode="same"))
    r = np.corrcoef(env, m.pose[:, 6])[0, 1]
    assert r > 0.6, r


def test_streaming_in_random_chunks_equals_one_push(sentences, names):
    x = sentences[0][: 3 * SR]
    whole = LipSync(names, SR).push(x)
    ls = LipSync(names, SR)
    rng = np.random.default_rng(0)
    pieces, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 700))
        pieces.extend(ls.push(x[i:i + n]))
        i += n
    assert len(pieces) == len(whole)
    np.testing.assert_allclose([p.jaw for p in pieces], [w.jaw for w in whole], atol=1e-6)
    np.testing.assert_allclose(np.stack([p.expr for p in pieces]), np.stack([w.expr for w in whole]), atol=1e-6)
    assert [p.viseme for p in pieces] == [w.viseme for w in whole]


def test_lipsync_file_motion_layout(sentences, names, tmp_path):
    x, _, path = sentences
    names_plus = names + ["notInThisModel"]
    m = lipsync_file(path, names_plus, fps=25)
    assert len(m) == int(np.ceil(len(x) / SR * 25))
    assert m.expr.shape == (len(m), len(names_plus)) and m.pose.shape == (len(m), 15)
    assert np.all(m.expr[:, -1] == 0)  # missing names are ignored
    other = np.delete(np.arange(15), 6)
    assert np.all(m.pose[:, other] == 0) and np.all(m.translation == 0)
    assert m.expr[:, names.index("mouthPress_L")].max() > 0.3  # the bilabials press the lips
    save_motion(m, tmp_path / "m.npz")
    back = load_motion(tmp_path / "m.npz")
    np.testing.assert_allclose(back.pose, m.pose)
    assert back.expr_names == names_plus


def test_read_audio_other_rates_and_formats(tmp_path):
    sr = 44100
    t = np.arange(sr // 2) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1)
    wavfile.write(str(tmp_path / "s.wav"), sr, (stereo * 32767).astype(np.int16))
    y, got = read_audio(tmp_path / "s.wav")
    assert got == sr and y.shape == (len(t),) and abs(np.abs(y).max() - 0.5) < 1e-3
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "missing.wav")
    try:
        import soundfile  # noqa: F401
    except (ImportError, OSError):
        (tmp_path / "a.flac").write_bytes(b"fLaC")
        with pytest.raises(ValueError, match="soundfile"):
            read_audio(tmp_path / "a.flac")


def test_no_portaudio_library_gives_clear_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(AudioUnavailableError) as err:
        open_input_stream(lambda s: None)
    msg = str(err.value)
    assert "PortAudio" in msg and "libportaudio2" in msg and "\n" not in msg


def test_sounddevice_not_installed_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(AudioUnavailableError, match="sounddevice package is not installed"):
        open_input_stream(lambda s: None)


def test_no_input_device_gives_clear_error(monkeypatch):
    fake = types.ModuleType("sounddevice")

    class PortAudioError(Exception):
        pass

    def query_devices(device=None, kind=None):
        raise PortAudioError("Error querying device -1")

    fake.PortAudioError = PortAudioError
    fake.query_devices = query_devices
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with pytest.raises(AudioUnavailableError) as err:
        open_input_stream(lambda s: None)
    assert "no audio input device" in str(err.value) and "\n" not in str(err.value)
    assert lipsync.AudioUnavailableError is AudioUnavailableError

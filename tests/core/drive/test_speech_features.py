"""The log-mel bands of AudioAnalyzer: where a tone's energy lands, and the scale of a noise's."""
from __future__ import annotations

import numpy as np
import pytest

from savatar.core.drive.speech_features import MEL_RANGE_HZ, N_MELS, AudioAnalyzer, mel_filterbank

SR = 16000


def mel(f):
    """O'Shaughnessy's mel scale, written out here independently of the module."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, float) / 700.0)


def test_filterbank_shape_and_normalisation():
    bank = mel_filterbank(SR, 1024)
    assert bank.shape == (N_MELS, 513)
    np.testing.assert_allclose(bank.sum(axis=1), 1.0, atol=1e-9)
    freqs = np.fft.rfftfreq(1024, 1.0 / SR)
    peaks = freqs[bank.argmax(axis=1)]
    assert np.all(np.diff(peaks) > 0)  # bands in rising order
    # Centres evenly spaced on the mel scale between the range's edges (within a bin's width).
    expected = np.linspace(mel(MEL_RANGE_HZ[0]), mel(MEL_RANGE_HZ[1]), N_MELS + 2)[1:-1]
    assert np.max(np.abs(mel(peaks) - expected)) < mel(MEL_RANGE_HZ[1]) / N_MELS / 2
    assert bank[:, freqs > MEL_RANGE_HZ[1] + 400].sum() == 0 and bank[:, freqs < MEL_RANGE_HZ[0] - 20].sum() == 0


@pytest.mark.parametrize("f", [300.0, 1000.0, 2500.0, 5000.0])
def test_a_tone_lands_in_its_band(f):
    x = (0.3 * np.sin(2 * np.pi * f * np.arange(SR // 2) / SR)).astype(np.float32)
    frame = AudioAnalyzer(SR).push(x)[20]
    band = int(np.argmax(frame.log_mel))
    centres = 700.0 * (10 ** (np.linspace(mel(MEL_RANGE_HZ[0]), mel(MEL_RANGE_HZ[1]), N_MELS + 2)[1:-1] / 2595.0) - 1)
    assert abs(band - int(np.argmin(np.abs(centres - f)))) <= 1, (f, band)
    # Bands two or more away from the tone's are far below it (Hamming's sidelobes are -43 dB).
    far = np.abs(np.arange(N_MELS) - band) >= 3
    assert frame.log_mel[far].max() < frame.log_mel[band] - 30.0


@pytest.mark.parametrize("dbfs", [-50.0, -20.0])
def test_white_noise_bands_read_its_loudness(dbfs):
    """Every band of a white noise reads the noise's RMS level (the bands share loudness_db's
    scale), within the spread of a 25 ms window's periodogram averaged over a band."""
    rng = np.random.default_rng(0)
    x = (10 ** (dbfs / 20) * rng.standard_normal(SR)).astype(np.float32)
    frames = AudioAnalyzer(SR).push(x)[10:]
    mean_db = 10 * np.log10(np.mean([10 ** (f.log_mel / 10) for f in frames], axis=0))
    loud = np.mean([f.loudness_db for f in frames])
    assert abs(loud - dbfs) < 0.5
    np.testing.assert_allclose(mean_db, dbfs, atol=1.0)

"""Formants of one speech frame by linear prediction, and a speaker normalisation of them.

Formant frequencies are what the mouth shape does to the sound: the first formant F1 rises as
the jaw opens (about 250-400 Hz for /i u/, 700-1000 Hz for /a/), the second F2 falls as the lips
round and the tongue moves back (/u/ ~900 Hz, /i/ ~2300 Hz). Both scale with the vocal tract's
length, so a child's or a woman's /a/ sits 15-30 % higher than a man's: `SpeakerNorm` keeps a
running mean and spread of each speaker's log formants and reads each frame relative to them.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.linalg import solve_toeplitz

# Upper edge of the band that LPC models: five formants of an adult voice lie below it (Praat's
# default ceiling sits between its male 5000 and female 5500 Hz); modelling 0..8 kHz instead
# lets spurious poles pair up in the weak band above.
CEILING_HZ = 5250.0
LPC_ORDER = 10  # two coefficients per formant, five formants under the ceiling


class Formants(NamedTuple):
    """F1, F2 in Hz (nan when not found) and their -3 dB bandwidths (Hz)."""

    f1: float
    f2: float
    b1: float
    b2: float


NO_FORMANTS = Formants(math.nan, math.nan, math.nan, math.nan)


class FormantEstimator:
    """LPC formants from a frame's power spectrum (selective linear prediction).

    The autocorrelation of the band 0..CEILING_HZ is the inverse FFT of the power spectrum cut
    there, as if the frame had been resampled to 2 x CEILING_HZ: the poles of that order-10
    predictor are the formants. Pre-emphasis (+6 dB/octave from ~100 Hz) is applied to the
    spectrum so the glottal tilt does not use up poles.
    """

    def __init__(self, sample_rate: int, nfft: int, ceiling_hz: float = CEILING_HZ, order: int = LPC_ORDER) -> None:
        self.sample_rate = sample_rate
        freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
        ceiling = min(ceiling_hz, sample_rate / 2)
        self._k = int(np.searchsorted(freqs, ceiling)) + 1
        self.band_rate = 2.0 * freqs[self._k - 1]  # the sample rate the cut band stands for
        w = 2 * np.pi * freqs[: self._k] / sample_rate
        self._emphasis = np.abs(1.0 - 0.96 * np.exp(-1j * w)) ** 2
        self.order = order

    def __call__(self, power: np.ndarray) -> Formants:
        """power: (nfft // 2 + 1,) power spectrum of the windowed frame."""
        r = np.fft.irfft(power[: self._k] * self._emphasis)[: self.order + 1]
        if not r[0] > 1e-20:
            return NO_FORMANTS
        r[0] *= 1.0 + 1e-4  # a little white noise keeps the Toeplitz system well conditioned
        try:
            a = solve_toeplitz(r[:-1], r[1:])
        except (np.linalg.LinAlgError, ValueError):
            return NO_FORMANTS
        roots = np.roots(np.concatenate([[1.0], -a]))
        roots = roots[roots.imag > 0]
        freqs = np.angle(roots) * self.band_rate / (2 * math.pi)
        bws = -np.log(np.abs(roots) + 1e-12) * self.band_rate / math.pi
        # Formants are sharp resonances above the voicing bar; wide poles model spectral tilt.
        keep = (freqs > 200.0) & (freqs < self.band_rate / 2 - 100.0) & (bws < 600.0)
        freqs, bws = freqs[keep], bws[keep]
        if len(freqs) < 2:
            return NO_FORMANTS
        order = np.argsort(freqs)
        freqs, bws = freqs[order], bws[order]
        return Formants(float(freqs[0]), float(freqs[1]), float(bws[0]), float(bws[1]))


class SpeakerNorm:
    """Running statistics of a speaker's log F1 and log F2 over sonorant frames.

    Starts from adult averages over men and women (Peterson & Barney, Hillenbrand: F1 ~500 Hz,
    F2 ~1500 Hz in the middle of the vowel space, spreads of ~0.35 and ~0.3 in log units) and
    moves towards the speaker's own with a time constant of `tau_s` seconds of speech, so a high
    or low voice is read on its own scale within a few seconds. z-scores: 0 is the speaker's
    middle vowel, +1 about one spread above. The mean stays within +-0.3 log units (+-35 %) of the
    prior, the range of adult and child vocal tract lengths, so a long stretch of one vowel is
    not taken for the speaker's middle.
    """

    PRIOR_MEAN = (math.log(500.0), math.log(1500.0))
    PRIOR_SD = (0.35, 0.30)

    def __init__(self, hop_s: float, tau_s: float = 3.0) -> None:
        self._a = 1.0 - math.exp(-hop_s / tau_s)
        self.mean = list(self.PRIOR_MEAN)
        self.var = [s * s for s in self.PRIOR_SD]

    def update(self, f1: float, f2: float) -> None:
        for i, f in enumerate((f1, f2)):
            x = math.log(f)
            d = x - self.mean[i]
            self.mean[i] = min(max(self.mean[i] + self._a * d, self.PRIOR_MEAN[i] - 0.3), self.PRIOR_MEAN[i] + 0.3)
            # Spread floored at half the prior's: a monotone stretch must not blow small
            # differences up into full jaw swings.
            self.var[i] = max((0.5 * self.PRIOR_SD[i]) ** 2, (1 - self._a) * (self.var[i] + self._a * d * d))

    def z(self, f1: float, f2: float) -> tuple[float, float]:
        return ((math.log(f1) - self.mean[0]) / math.sqrt(self.var[0]),
                (math.log(f2) - self.mean[1]) / math.sqrt(self.var[1]))

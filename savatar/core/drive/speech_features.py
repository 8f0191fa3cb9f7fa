"""Per-hop speech features for driving a mouth: loudness against a learned noise floor, voice
activity, voicing, band energies and speaker-normalised formants (see formants.py).

`AudioAnalyzer.push` takes samples in pieces of any size and returns one `AudioFrame` per 10 ms
hop; the frames are the same whether the audio arrives in one piece or in microphone callbacks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from savatar.core.drive.formants import FormantEstimator, SpeakerNorm

SILENCE_DB = -100.0
LOCAL_PEAK_S = 0.15
N_MELS = 24
MEL_RANGE_HZ = (80.0, 7600.0)


def mel_filterbank(sample_rate: int, nfft: int, n_mels: int = N_MELS,
                   f_lo: float = MEL_RANGE_HZ[0], f_hi: float = MEL_RANGE_HZ[1]) -> np.ndarray:
    """(n_mels, nfft // 2 + 1) triangular filters evenly spaced on the mel scale (O'Shaughnessy's
    2595 log10(1 + f / 700)), each summing to 1 so a band's value is its mean power."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    f_hi = min(f_hi, sample_rate / 2)
    edges = 700.0 * (10 ** (np.linspace(mel(f_lo), mel(f_hi), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bank = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    # A band narrower than the FFT's bin spacing would catch no bin: give it its nearest bin.
    empty = bank.sum(axis=1) == 0
    bank[empty, np.searchsorted(freqs, mid[empty, 0]).clip(0, len(freqs) - 1)] = 1.0
    return bank / bank.sum(axis=1, keepdims=True)


@dataclass
class AudioFrame:
    """Features of one hop. time_s is the centre of the analysis window.

    loudness_db: RMS in dB full scale (>= -100); snr_db: above the noise floor; active: voice
    activity; level: 0..1 loudness relative to the recent speech peak (0 when inactive); dip_db:
    dB below that peak (0 when inactive); local_dip_db: dB below the loudest frame of the last
    LOCAL_PEAK_S (0 when inactive: a stop closure drops fast from its vowel, a quieter word does
    not); quiet: active but down near the noise floor (a pause or
    a closure inside speech); voicing: 0..1 periodicity (normalised autocorrelation peak at a
    pitch lag, 0 for noise and whisper); f1, f2: formants in Hz and z1, z2 the speaker-normalised
    log formants (nan when not measured: inactive or not sonorant); flatness: spectral flatness
    0..1; centroid: spectral centroid Hz; lf_ratio, hf_ratio: energy fractions below 400 Hz and
    above 2.5 kHz; zcr: zero crossings per sample; log_mel: (N_MELS,) band powers in dB (the
    window's, as loudness_db is; mel_filterbank's bands).
    """

    time_s: float
    loudness_db: float
    snr_db: float
    active: bool
    level: float
    dip_db: float
    local_dip_db: float
    quiet: bool
    voicing: float
    f1: float
    f2: float
    z1: float
    z2: float
    flatness: float
    centroid: float
    lf_ratio: float
    hf_ratio: float
    zcr: float
    log_mel: np.ndarray = field(default_factory=lambda: np.full(N_MELS, SILENCE_DB, np.float32))

    @property
    def sonorant(self) -> bool:
        """Formants were measured: a vowel, glide, liquid or nasal, voiced or whispered."""
        return math.isfinite(self.z1)


class AudioAnalyzer:
    """Streaming frame analysis: `push` any number of samples, get one AudioFrame per full hop.

    The window of frame i covers samples [i*hop - (win - hop), i*hop + hop) (zeros before the
    start), so a frame is ready as soon as its hop has arrived.

    Noise floor: learned from the quietest moments, minimum statistics over the last
    floor_window_s (speech pauses at least that often), the first estimate after learn_s of
    audio (the first quiet moments), falling at once when the input gets quieter.
    """

    def __init__(self, sample_rate: int, hop_s: float = 0.01, win_s: float = 0.025,
                 on_margin_db: float = 12.0, off_margin_db: float = 6.0, min_db: float = -60.0,
                 hangover_s: float = 0.15, range_db: float = 30.0, floor_window_s: float = 2.0,
                 learn_s: float = 0.25) -> None:
        self.sample_rate = int(sample_rate)
        self.hop = max(1, round(hop_s * self.sample_rate))
        self.win = max(self.hop, round(win_s * self.sample_rate))
        self.on_margin_db, self.off_margin_db, self.min_db = on_margin_db, off_margin_db, min_db
        self.range_db = range_db
        self.hangover = max(1, round(hangover_s / self.hop_s))
        self.nfft = 1 << (2 * self.win - 1).bit_length()  # linear (not circular) autocorrelation
        self._window = np.hamming(self.win).astype(np.float64)
        freqs = np.fft.rfftfreq(self.nfft, 1.0 / self.sample_rate)
        self._freqs = freqs
        self._lf = freqs < 400.0
        self._hf = freqs > 2500.0
        # Mean power per bin over the window's energy: every band of a white noise reads its
        # loudness_db, so band levels and loudness share one scale.
        self._mel = mel_filterbank(self.sample_rate, self.nfft) / float(np.sum(self._window ** 2))
        # Voicing: the autocorrelation of the windowed frame divided by the window's own (Boersma
        # 1993), looked at over pitch lags 2.5-16 ms (400-62 Hz).
        w_ac = np.fft.irfft(np.abs(np.fft.rfft(self._window, self.nfft)) ** 2)[: self.win]
        self._lag0 = max(2, int(self.sample_rate / 400.0))
        self._lag1 = min(self.win // 2, int(self.sample_rate / 62.0))
        self._w_ac = w_ac[self._lag0:self._lag1 + 1] / w_ac[0]
        self.formants = FormantEstimator(self.sample_rate, self.nfft)
        self.speaker = SpeakerNorm(self.hop_s)
        self._buf = np.zeros(self.win - self.hop, np.float32)
        self._noise_psd: np.ndarray | None = None
        self._n_frames = 0
        # Start from a quiet microphone's level, not from the first frame: audio may start in the
        # middle of a vowel, and a floor learned there would mute the speech that follows.
        self._floor = min_db
        self._recent = np.full(max(2, round(floor_window_s / self.hop_s)), np.nan)
        self._learn = max(1, round(learn_s / self.hop_s))
        self._peak = -math.inf
        self._local = np.full(max(1, round(LOCAL_PEAK_S / self.hop_s)), SILENCE_DB)
        self._active = False
        self._below = 0
        # Floor rises slowly (3 dB/s) so long speech does not become the floor, falls fast.
        self._floor_rise = 3.0 * self.hop_s
        self._peak_decay = 2.0 * self.hop_s

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate

    @property
    def noise_floor_db(self) -> float:
        return self._floor

    def push(self, samples: np.ndarray) -> list[AudioFrame]:
        """samples: (N,) float mono in [-1, 1]. Returns the frames completed by them."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        buf = np.concatenate([self._buf, samples])
        frames = []
        start = 0
        while start + self.win <= len(buf):
            frames.append(self._frame(buf[start:start + self.win]))
            start += self.hop
        self._buf = buf[start:]
        return frames

    def _frame(self, x: np.ndarray) -> AudioFrame:
        t = (self._n_frames * self.hop + self.hop - self.win / 2) / self.sample_rate
        self._n_frames += 1
        x = x.astype(np.float64)
        rms = math.sqrt(float(np.dot(x, x)) / len(x))
        db = max(SILENCE_DB, 20.0 * math.log10(rms + 1e-12))
        active, quiet, level, dip = self._vad(db)
        self._local[(self._n_frames - 1) % len(self._local)] = db
        local_dip = float(self._local.max()) - db if active else 0.0

        power = np.abs(np.fft.rfft(x * self._window, self.nfft)) ** 2 + 1e-20
        total = float(power.sum())
        flatness = float(np.exp(np.mean(np.log(power))) / np.mean(power))
        centroid = float(np.dot(self._freqs, power) / total)
        lf = float(power[self._lf].sum() / total)
        hf = float(power[self._hf].sum() / total)
        signs = np.signbit(x)
        zcr = float(np.count_nonzero(signs[1:] != signs[:-1])) / (len(x) - 1)
        voicing = 0.0
        f1 = f2 = z1 = z2 = math.nan
        if not active or self._n_frames <= self._learn:
            # The noise spectrum, learned where there is no speech (from the first frames on).
            a = 1.0 if self._noise_psd is None else 0.1
            self._noise_psd = power if self._noise_psd is None else self._noise_psd + a * (power - self._noise_psd)
        if active:
            ac = np.fft.irfft(power)
            voicing = float(max(0.0, np.max(ac[self._lag0:self._lag1 + 1] / self._w_ac) / ac[0]))
            # Sonorant: voiced, or a whisper's vowel (noise whose energy sits under 2.5 kHz); a
            # fricative or a closure's murmur has no vowel formants to read.
            if not quiet and (voicing > 0.45 or hf < 0.5):
                # Spectral subtraction: a fan's or a street's noise would otherwise pull the
                # poles towards its own spectrum (back vowels' close F1 and F2 merge first).
                clean = power if self._noise_psd is None else np.maximum(power - self._noise_psd, 0.02 * power)
                fm = self.formants(clean)
                if math.isfinite(fm.f1) and fm.f1 < 1300.0 and fm.f2 < 3500.0:
                    f1, f2 = fm.f1, fm.f2
                    if db - self._floor > 15.0:  # learn the speaker from clean frames only
                        self.speaker.update(f1, f2)
                    z1, z2 = self.speaker.z(f1, f2)
        log_mel = (10.0 * np.log10(self._mel @ power + 1e-10)).astype(np.float32)
        return AudioFrame(t, db, db - self._floor, active, level, dip, local_dip, quiet, min(voicing, 1.0), f1, f2, z1, z2,
                          flatness, centroid, lf, hf, zcr, np.maximum(log_mel, SILENCE_DB))

    def _vad(self, db: float) -> tuple[bool, bool, float, float]:
        if db < self._floor:
            self._floor += 0.3 * (db - self._floor)
        else:
            self._floor += min(db - self._floor, self._floor_rise)
        n = self._n_frames
        self._recent[(n - 1) % len(self._recent)] = db
        if n >= self._learn:
            # 3 dB below the quietest frame so far: a stationary noise's frames spread about that.
            self._floor = max(self._floor, float(np.nanmin(self._recent)) - 3.0)
        on = db > max(self._floor + self.on_margin_db, self.min_db)
        off = db < max(self._floor + self.off_margin_db, self.min_db)
        if n == self._learn and not on:
            self._active = False  # activity so far was judged against a guessed floor: no hangover
        if on:
            self._active, self._below = True, 0
        elif self._active and off:
            # Hangover: short dips (stop closures, pauses between words) stay inside speech, so a
            # /p/ closure reads as a dip within speech, not as silence.
            self._below += 1
            if self._below > self.hangover:
                self._active = False
        if not self._active:
            return False, False, 0.0, 0.0
        if db > self._peak:
            self._peak = db
        else:
            self._peak = max(self._peak - self._peak_decay, self._floor + self.on_margin_db)
        dip = self._peak - db
        return True, off, min(1.0, max(0.0, 1.0 - dip / self.range_db)), dip

"""Speech-driven mouth animation from audio alone (no downloaded model).

Pipeline, one frame per 10 ms hop:
1. `AudioAnalyzer`: loudness (RMS dB), voice activity (adaptive noise floor with hysteresis and a
   hangover), a speech level relative to the recent loudness peak, LPC formants F1/F2, and
   spectral shape (flatness, centroid, low/high band energy ratios, zero-crossing rate).
2. `classify_viseme`: one of the 15 Oculus visemes from those features. Emitted classes: sil,
   PP (bilabial closure: a deep energy dip inside speech, or a low-frequency nasal murmur),
   FF, SS, CH (fricatives by spectral centroid / flatness), and the vowels aa, E, ih, oh, ou by
   the nearest formant prototype. The other visemes (TH, DD, kk, nn, RR) have mouth shapes in
   the tables but no detector: their acoustics are not separable from these features robustly.
3. `LipSync`: jaw opening (pose[6], radians) = speech level x the viseme's openness, plus
   expression weights looked up by name, with attack/release smoothing.

`lipsync_file` runs the same streaming code offline and returns a `Motion`. `open_input_stream`
opens a microphone through sounddevice and turns every "no audio here" failure into
`AudioUnavailableError` with a one-line message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from scipy.linalg import solve_toeplitz

from savatar.core.drive.motion import Motion

VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR",
                            "aa", "E", "ih", "oh", "ou")

# Jaw openness of each viseme, 0..1 of `LipSync.max_jaw`: aa > E/oh > ih > ou, closed for PP.
OPENNESS: dict[str, float] = {
    "sil": 0.0, "PP": 0.0, "FF": 0.1, "TH": 0.15, "DD": 0.25, "kk": 0.3, "CH": 0.15, "SS": 0.1,
    "nn": 0.15, "RR": 0.25, "aa": 1.0, "E": 0.6, "ih": 0.4, "oh": 0.6, "ou": 0.25,
}

# Expression weights (ARKit-style names) of each viseme's lip shape.
SHAPES: dict[str, dict[str, float]] = {
    "sil": {},
    # No mouthClose in the basis: pressing and rolling both lips in closes them.
    "PP": {"mouthPress_L": 0.8, "mouthPress_R": 0.8, "mouthRollUpper": 0.3, "mouthRollLower": 0.3},
    # Lower lip tucked under the upper teeth.
    "FF": {"mouthRollLower": 0.6, "mouthUpperUp_L": 0.3, "mouthUpperUp_R": 0.3},
    "TH": {"mouthLowerDown_L": 0.2, "mouthLowerDown_R": 0.2},
    "DD": {"mouthStretch_L": 0.2, "mouthStretch_R": 0.2},
    "kk": {"mouthStretch_L": 0.15, "mouthStretch_R": 0.15},
    "CH": {"mouthFunnel": 0.5, "mouthPucker": 0.2},
    "SS": {"mouthStretch_L": 0.4, "mouthStretch_R": 0.4, "mouthSmile_L": 0.2, "mouthSmile_R": 0.2},
    "nn": {"mouthStretch_L": 0.1, "mouthStretch_R": 0.1},
    "RR": {"mouthPucker": 0.3, "mouthFunnel": 0.2},
    "aa": {"mouthLowerDown_L": 0.3, "mouthLowerDown_R": 0.3},
    "E": {"mouthStretch_L": 0.5, "mouthStretch_R": 0.5, "mouthUpperUp_L": 0.1, "mouthUpperUp_R": 0.1},
    "ih": {"mouthStretch_L": 0.6, "mouthStretch_R": 0.6, "mouthSmile_L": 0.2, "mouthSmile_R": 0.2},
    "oh": {"mouthFunnel": 0.7},
    "ou": {"mouthPucker": 0.9, "mouthFunnel": 0.3},
}

# Vowel prototypes (F1, F2 in Hz), adult averages (Peterson & Barney / Hillenbrand), between male
# and female so that either voice lands near the right class.
VOWEL_PROTOTYPES: dict[str, tuple[float, float]] = {
    "aa": (750.0, 1250.0), "E": (560.0, 1900.0), "ih": (360.0, 2250.0),
    "oh": (560.0, 900.0), "ou": (340.0, 950.0),
}

SILENCE_DB = -100.0


class AudioUnavailableError(RuntimeError):
    """No audio input here (no PortAudio library, no sounddevice, or no input device)."""


@dataclass
class AudioFrame:
    """Features of one hop. time_s is the centre of the analysis window.

    loudness_db: RMS in dB full scale (>= -100); active: voice activity; level: 0..1 loudness
    relative to the recent speech peak (0 when inactive); dip_db: dB below that peak (0 when
    inactive); quiet: active but down at the noise floor (the hangover: a pause or closure);
    f1, f2: formants in Hz (nan if none);
    flatness: spectral flatness 0..1; centroid: spectral centroid Hz; lf_ratio, hf_ratio: energy
    fractions below 400 Hz and above 2.5 kHz; zcr: zero crossings per sample.
    """

    time_s: float
    loudness_db: float
    active: bool
    level: float
    dip_db: float
    quiet: bool
    f1: float
    f2: float
    flatness: float
    centroid: float
    lf_ratio: float
    hf_ratio: float
    zcr: float


class AudioAnalyzer:
    """Streaming frame analysis: `push` any number of samples, get one AudioFrame per full hop.

    The window of frame i covers samples [i*hop - (win - hop), i*hop + hop) (zeros before the
    start), so a frame is ready as soon as its hop has arrived: the same frames come out whether
    the audio arrives in one piece or in microphone callbacks of any size.
    """

    def __init__(self, sample_rate: int, hop_s: float = 0.01, win_s: float = 0.025,
                 on_margin_db: float = 12.0, off_margin_db: float = 6.0, min_db: float = -60.0,
                 hangover_s: float = 0.15, range_db: float = 30.0, floor_window_s: float = 2.0) -> None:
        self.sample_rate = int(sample_rate)
        self.hop = max(1, round(hop_s * self.sample_rate))
        self.win = max(self.hop, round(win_s * self.sample_rate))
        self.on_margin_db, self.off_margin_db, self.min_db = on_margin_db, off_margin_db, min_db
        self.range_db = range_db
        self.hangover = max(1, round(hangover_s / (self.hop / self.sample_rate)))
        # 2 + kHz is the textbook LPC order (one pole pair per kHz of bandwidth, plus two for
        # glottal/radiation tilt); clamped so very high or low rates stay sensible.
        self.order = int(min(18, max(10, 2 + self.sample_rate // 1000)))
        self.nfft = 1 << (2 * self.win - 1).bit_length()  # linear (not circular) autocorrelation
        self._window = np.hamming(self.win).astype(np.float64)
        freqs = np.fft.rfftfreq(self.nfft, 1.0 / self.sample_rate)
        self._freqs = freqs
        self._lf = freqs < 400.0
        self._hf = freqs > 2500.0
        self._buf = np.zeros(self.win - self.hop, np.float32)
        self._n_frames = 0
        # Start from a quiet microphone's level, not from the first frame: audio may start in the
        # middle of a vowel, and a floor learned there would mute the speech that follows.
        self._floor = min_db
        # Minimum statistics: the quietest frame of the last floor_window_s seconds is noise (speech
        # pauses at least that often), so a noisy input's floor is found within one window.
        self._recent = np.full(max(2, round(floor_window_s * self.sample_rate / self.hop)), np.nan)
        self._peak = -math.inf
        self._active = False
        self._below = 0
        # Floor rises slowly (3 dB/s) so long speech does not become the floor, falls fast.
        self._floor_rise = 3.0 * self.hop / self.sample_rate
        self._peak_decay = 2.0 * self.hop / self.sample_rate

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate

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

        spec = np.abs(np.fft.rfft(x * self._window, self.nfft)) ** 2 + 1e-20
        total = float(spec.sum())
        flatness = float(np.exp(np.mean(np.log(spec))) / np.mean(spec))
        centroid = float(np.dot(self._freqs, spec) / total)
        lf = float(spec[self._lf].sum() / total)
        hf = float(spec[self._hf].sum() / total)
        signs = np.signbit(x)
        zcr = float(np.count_nonzero(signs[1:] != signs[:-1])) / (len(x) - 1)
        f1, f2 = self._formants(x) if active else (math.nan, math.nan)
        return AudioFrame(t, db, active, level, dip, quiet, f1, f2, flatness, centroid, lf, hf, zcr)

    def _vad(self, db: float) -> tuple[bool, bool, float, float]:
        if db < self._floor:
            self._floor += 0.3 * (db - self._floor)
        else:
            self._floor += min(db - self._floor, self._floor_rise)
        self._recent[(self._n_frames - 1) % len(self._recent)] = db
        if self._n_frames >= len(self._recent):
            # 3 dB below the window's minimum: a stationary noise's frames spread about that much.
            self._floor = max(self._floor, float(self._recent.min()) - 3.0)
        on = db > max(self._floor + self.on_margin_db, self.min_db)
        off = db < max(self._floor + self.off_margin_db, self.min_db)
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

    def _formants(self, x: np.ndarray) -> tuple[float, float]:
        """F1, F2 in Hz from the roots of an autocorrelation-method LPC polynomial."""
        y = np.empty_like(x)
        y[0] = x[0]
        y[1:] = x[1:] - 0.97 * x[:-1]  # pre-emphasis flattens the -6 dB/octave glottal tilt
        y *= self._window
        r = np.fft.irfft(np.abs(np.fft.rfft(y, self.nfft)) ** 2)[: self.order + 1]
        if r[0] <= 1e-12:
            return math.nan, math.nan
        r[0] *= 1.0 + 1e-6  # tiny white-noise correction keeps the Toeplitz system well posed
        try:
            a = solve_toeplitz(r[:-1], r[1:])
        except np.linalg.LinAlgError:
            return math.nan, math.nan
        roots = np.roots(np.concatenate([[1.0], -a]))
        roots = roots[roots.imag > 0]
        freqs = np.angle(roots) * self.sample_rate / (2 * math.pi)
        bws = -np.log(np.abs(roots) + 1e-12) * self.sample_rate / math.pi
        # Formants are sharp resonances above the voicing bar; wide poles model spectral tilt.
        keep = (freqs > 150.0) & (bws < 500.0)
        f = np.sort(freqs[keep])
        if len(f) < 2:
            return math.nan, math.nan
        return float(f[0]), float(f[1])


def classify_viseme(frame: AudioFrame, dip_pp_db: float = 20.0) -> str:
    """One of VISEMES for an analysed frame (see the module docstring for the rules)."""
    if not frame.active:
        return "sil"
    # Down at the noise floor inside speech: a pause or stop closure; whatever the noise looks
    # like spectrally, it is not a fricative.
    if frame.quiet:
        return "PP"
    # Fricatives: most energy above 2.5 kHz, noise-like. /f/ is weak and flat; /s/ is centred
    # high (5+ kHz); /sh/, /ch/ lower (2.5-4.5 kHz).
    if frame.hf_ratio > 0.45 and frame.zcr > 0.2:
        if frame.flatness > 0.35 and frame.level < 0.6:
            return "FF"
        return "SS" if frame.centroid > 4500.0 else "CH"
    # Lips closed: a deep dip inside speech (stop closure, near silence) or a nasal murmur (all
    # energy below 400 Hz, 10+ dB quieter than the vowels around it).
    if frame.dip_db > dip_pp_db or (frame.lf_ratio > 0.8 and frame.dip_db > 10.0):
        return "PP"
    if not (np.isfinite(frame.f1) and np.isfinite(frame.f2)):
        return "E"
    # Nearest vowel prototype in log-frequency space (perceptual spacing; F2 counts less since it
    # varies more across speakers).
    best, best_d = "E", math.inf
    for name, (p1, p2) in VOWEL_PROTOTYPES.items():
        d = (math.log(frame.f1 / p1)) ** 2 + 0.5 * (math.log(frame.f2 / p2)) ** 2
        if d < best_d:
            best, best_d = name, d
    return best


class LipFrame(NamedTuple):
    """time_s: window centre, seconds since the first sample pushed; expr: (E,) weights in the given expr_names order; jaw: radians."""

    time_s: float
    expr: np.ndarray
    jaw: float
    viseme: str
    loudness: float


class LipSync:
    """Audio -> (jaw opening, expression weights) per hop, streaming.

    expr_names: the head model's expression names; viseme shapes use ARKit-style names and any
    name the model lacks is ignored. max_jaw: jaw rotation (radians, pose[6]) of a loud "aa".
    """

    def __init__(self, expr_names: list[str], sample_rate: int = 16000, max_jaw: float = 0.35,
                 attack_s: float = 0.03, release_s: float = 0.08, closure_s: float = 0.012) -> None:
        self.analyzer = AudioAnalyzer(sample_rate)
        self.expr_names = list(expr_names)
        self.max_jaw = max_jaw
        index = {n: i for i, n in enumerate(self.expr_names)}
        self._shapes = {}
        for vis in VISEMES:
            v = np.zeros(len(self.expr_names), np.float32)
            for name, w in SHAPES[vis].items():
                if name in index:
                    v[index[name]] = w
            self._shapes[vis] = v
        dt = self.analyzer.hop_s
        self._a_attack = 1.0 - math.exp(-dt / attack_s)
        self._a_release = 1.0 - math.exp(-dt / release_s)
        # Lip closures are fast gestures (the jaw and lips close in a few tens of ms for /p b m/);
        # the ordinary release would leave the mouth visibly open through a whole closure.
        self._a_closure = 1.0 - math.exp(-dt / closure_s)
        self._jaw = 0.0
        self._expr = np.zeros(len(self.expr_names), np.float32)

    @property
    def sample_rate(self) -> int:
        return self.analyzer.sample_rate

    def push(self, samples: np.ndarray) -> list[LipFrame]:
        """samples: (N,) float32 mono at `sample_rate`. Returns one LipFrame per completed hop."""
        out = []
        for fr in self.analyzer.push(samples):
            vis = classify_viseme(fr)
            jaw_target = self.max_jaw * OPENNESS[vis] * fr.level
            # Lip shapes of sounds fade in with loudness; a closure's press is full at any level.
            strength = 1.0 if vis == "PP" else min(1.0, 2.0 * fr.level)
            expr_target = self._shapes[vis] * strength
            fall = self._a_closure if vis in ("PP", "sil") else self._a_release
            a = self._a_attack if jaw_target > self._jaw else fall
            self._jaw += a * (jaw_target - self._jaw)
            a_e = np.where(expr_target > self._expr, self._a_attack, fall).astype(np.float32)
            self._expr = self._expr + a_e * (expr_target - self._expr)
            out.append(LipFrame(fr.time_s, self._expr.copy(), self._jaw, vis, fr.loudness_db))
        return out


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples (N,) float32 mono in [-1, 1], sample rate). WAV always; FLAC/OGG need soundfile."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        import soundfile
    except (ImportError, OSError):
        soundfile = None
    if soundfile is not None:
        data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
        return data.mean(axis=1).astype(np.float32), int(sr)
    if path.suffix.lower() not in (".wav", ".wave"):
        raise ValueError(f"{path}: only WAV files can be read here; install the 'soundfile' package "
                         "for FLAC and OGG")
    from scipy.io import wavfile

    sr, data = wavfile.read(str(path))
    if data.dtype.kind == "i":
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    elif data.dtype.kind == "u":  # 8-bit WAV is unsigned, centred on 128
        data = (data.astype(np.float32) - 128.0) / 128.0
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data, int(sr)


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """(N,) -> (M,) float32 by polyphase filtering (anti-aliased)."""
    if sr_in == sr_out:
        return samples.astype(np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(sr_in, sr_out)
    return resample_poly(samples, sr_out // g, sr_in // g).astype(np.float32)


def lipsync_file(path: str | Path, expr_names: list[str], fps: float = 30.0,
                 progress: Callable[[float], None] | None = None, sample_rate: int = 16000) -> Motion:
    """Mouth motion for an audio file at `fps` (jaw in pose[:, 6], expression by name).

    progress, if given, is called with the fraction done (0..1) as the audio is analysed.
    """
    samples, sr = read_audio(path)
    samples = resample(samples, sr, sample_rate)
    ls = LipSync(expr_names, sample_rate)
    chunk = sample_rate  # 1 s pieces: the streaming path, with room for progress reports
    frames: list[LipFrame] = []
    for start in range(0, len(samples), chunk):
        frames.extend(ls.push(samples[start:start + chunk]))
        if progress is not None:
            progress(min(1.0, (start + chunk) / max(1, len(samples))))
    # Flush: a hop of zeros after the end completes the last partial window.
    frames.extend(ls.push(np.zeros(ls.analyzer.win, np.float32)))
    n = max(1, int(math.ceil(len(samples) / sample_rate * fps)))
    t_out = np.arange(n) / fps
    times = np.array([f.time_s for f in frames])
    jaw = np.interp(t_out, times, np.array([f.jaw for f in frames]))
    expr_frames = np.stack([f.expr for f in frames])
    expr = np.zeros((n, len(expr_names)), np.float32)
    for j in range(len(expr_names)):
        expr[:, j] = np.interp(t_out, times, expr_frames[:, j])
    pose = np.zeros((n, 15), np.float32)
    pose[:, 6] = jaw
    return Motion(float(fps), expr, pose, np.zeros((n, 3), np.float32), list(expr_names))


def import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:
        raise AudioUnavailableError(
            f"audio unavailable: no PortAudio library ({exc}); install libportaudio2 (Debian/Ubuntu) "
            "or portaudio (macOS: brew install portaudio)") from None
    except ImportError as exc:
        raise AudioUnavailableError(f"audio unavailable: the sounddevice package is not installed ({exc})") from None
    return sounddevice


def open_input_stream(callback: Callable[[np.ndarray], None], sample_rate: int = 16000,
                      blocksize: int = 160, device: int | str | None = None):
    """Open and start a mono float32 microphone stream; callback gets (N,) float32 per block.

    Returns the started sounddevice.InputStream (call .stop()/.close(), or use it in `with`).
    Raises AudioUnavailableError with a one-line message when there is no PortAudio library, no
    sounddevice, no input device, or the device refuses the stream.
    """
    sd = import_sounddevice()
    try:
        info = sd.query_devices(device, kind="input")
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioUnavailableError(f"audio unavailable: no audio input device ({exc})") from None
    if not info or int(info.get("max_input_channels", 0)) < 1:
        raise AudioUnavailableError("audio unavailable: no audio input device")

    def _cb(indata, frames, time_info, status) -> None:
        callback(np.asarray(indata[:, 0], np.float32).copy())

    try:
        stream = sd.InputStream(samplerate=sample_rate, channels=1, dtype="float32", blocksize=blocksize,
                                device=device, callback=_cb)
        stream.start()
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioUnavailableError(f"audio unavailable: cannot open input device "
                                    f"'{info.get('name', device)}' at {sample_rate} Hz ({exc})") from None
    return stream

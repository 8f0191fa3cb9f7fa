"""Speech-driven mouth animation from audio alone (no downloaded model).

The mouth shape comes from the spectrum, not from loudness. One frame per 10 ms hop:
1. `AudioAnalyzer` (speech_features.py): loudness against a noise floor learned from the quiet
   moments, voice activity, voicing, band energies, and LPC formants F1/F2 read on the
   speaker's own scale (formants.py).
2. Articulation, from phonetics: the jaw opens with the first formant (open vowels such as /a/
   have a high F1, /i/ and /u/ a low one); the lips round as the second formant falls (/u/, /o/)
   and spread as it rises (/i/, /e/); a deep energy dip or a nasal murmur inside speech is a
   closure (/p b m/: lips pressed); weak flat frication is /f v/ (lower lip under the teeth),
   strong high frication /s/ or /sh/ (teeth nearly together). Loudness only scales the opening.
3. `LipSync`: jaw opening (pose[6], radians) and expression weights looked up by name, with
   attack/release smoothing; `classify_viseme` names the frame's class (one of the 15 Oculus
   visemes; TH, DD, kk, nn, RR have shapes but no detector) for status lines and tests.

`lipsync_file` runs the same streaming code offline and returns a `Motion`, with the mouth
leading the sound by `MOUTH_LEAD_S` as it does in real speech (live, the mouth can only follow).
`open_input_stream` opens a microphone through sounddevice and turns every "no audio here"
failure into `AudioUnavailableError` with a one-line message.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from savatar.core.drive.motion import Motion
from savatar.core.drive.mouth_regressor import MouthRegressor, hop_features
from savatar.core.drive.speech_features import SILENCE_DB, AudioAnalyzer, AudioFrame

__all__ = ["SILENCE_DB", "AudioAnalyzer", "AudioFrame", "AudioUnavailableError", "LipFrame", "LipSync",
           "JAW", "JawRule", "LEARNED", "LearnedJaw", "MOUTH_LEAD_S", "VISEMES", "articulation", "classify_viseme", "lipsync_file", "open_input_stream",
           "read_audio", "resample"]

VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR",
                            "aa", "E", "ih", "oh", "ou")

# How much earlier than its sound the mouth moves in file mode (seconds); measured on five real
# talking clips (the dev clip and four other speakers) by scripts/fit_lipsync.py: the lead whose
# avatar mouth correlates best with the real speaker's mouth opening. Chosen leave-one-clip-out
# it was 80-140 ms for every clip (40 ms before). Speech physiology agrees: the lips and jaw reach a sound's
# shape before the sound is heard (tens of ms inside speech, 100-300 ms at phrase onsets). The
# learned mouth model (mouth_regressor.py) is trained at this lead; over its 46 training clips,
# leave-one-source-out, its output correlates best with the real mouth at 100-120 ms.
MOUTH_LEAD_S = 0.10

# Expression weights (ARKit-style names) of the articulatory components.
CLOSURE = {"mouthPress_L": 0.8, "mouthPress_R": 0.8, "mouthRollUpper": 0.3, "mouthRollLower": 0.3}
LIP_TEETH = {"mouthRollLower": 0.6, "mouthUpperUp_L": 0.3, "mouthUpperUp_R": 0.3}
ROUND = {"mouthPucker": 0.8, "mouthFunnel": 0.5}
SPREAD = {"mouthStretch_L": 0.5, "mouthStretch_R": 0.5, "mouthSmile_L": 0.15, "mouthSmile_R": 0.15}
OPEN_LIPS = {"mouthLowerDown_L": 0.35, "mouthLowerDown_R": 0.35}

# Lip shapes of the visemes without their own component (status and the viewer's sliders).
SHAPES: dict[str, dict[str, float]] = {
    "sil": {}, "PP": CLOSURE, "FF": LIP_TEETH,
    "TH": {"mouthLowerDown_L": 0.2, "mouthLowerDown_R": 0.2},
    "DD": {"mouthStretch_L": 0.2, "mouthStretch_R": 0.2},
    "kk": {"mouthStretch_L": 0.15, "mouthStretch_R": 0.15},
    "CH": {"mouthFunnel": 0.5, "mouthPucker": 0.2},
    "SS": {"mouthStretch_L": 0.4, "mouthStretch_R": 0.4, "mouthSmile_L": 0.2, "mouthSmile_R": 0.2},
    "nn": {"mouthStretch_L": 0.1, "mouthStretch_R": 0.1},
    "RR": {"mouthPucker": 0.3, "mouthFunnel": 0.2},
}

# Jaw openness (0..1 of LipSync.max_jaw) of the consonant classes detected.
CONSONANT_OPENNESS = {"sil": 0.0, "PP": 0.0, "FF": 0.1, "SS": 0.1, "CH": 0.12}


class JawRule(NamedTuple):
    """Jaw openness of a vowel (0..1 of LipSync.max_jaw) from its speaker-normalised first
    formant z1: floor + (1 - floor) * clip(base + per_z1 * z1, 0, 1), times
    (1 - loudness) + loudness * level (the share of the opening that loudness scales)."""

    base: float
    per_z1: float
    floor: float
    loudness: float


# Chosen on real talking clips by scripts/fit_lipsync.py among the rules that pass the
# synthesized-speech tests (leave-one-clip-out with the lead; held-out numbers in its output and
# in the commit that set these): the jaw follows the vowel's F1 with more contrast than the
# phonetic prior had (no floor: /i/ and /u/ nearly shut, as the avatar shows a mouth only above
# about 0.07 rad) and loudness does not scale it. Before: JawRule(0.45, 0.35, 0.2, 0.45).
JAW = JawRule(base=0.45, per_z1=0.5, floor=0.0, loudness=0.0)


class LearnedJaw(NamedTuple):
    """How the learned mouth opening (mouth_regressor.py; z, in the speaker's own spread) drives
    the jaw on vowels and other sonorants. The avatar is asked to show a mouth opening of
    centre + per_z * z (MediaPipe's inner lips over inter-ocular distance, the measure taken on
    the real speakers), through its measured jaw -> opening response (LEARNED_OPENING), so what is
    seen follows z linearly; the jaw's openness is share * that + (1 - share) * the formant
    rule's (JAW): the rule keeps /a/ open and /i/ nearly shut on synthesized vowels, which a
    model of real mouths (that open on context, not on one vowel) does not promise."""

    centre: float
    per_z: float
    share: float


# Chosen by scripts/train_mouth_regressor.py on the 46 training clips, leave-one-source-out
# through LipSync and the avatar's response (mean correlation with the real mouth at lag 0:
# 0.329, the formant rule alone 0.229), among the settings that keep the synthesized-speech
# tests: a share over 0.7 loses /a/ > 2 x /i/ in noise, a lower centre leaves a sustained /a/
# under 0.25 rad (centre 0.25, per_z 0.5 scored 0.331 but fails that test).
LEARNED = LearnedJaw(centre=0.25, per_z=0.7, share=0.7)

# The jaw -> opening response LEARNED was chosen through (and the model trained against): the
# default avatar's as MediaPipe read it on frontal renders while its lip curtain still carried
# the lips' colours (shut below 0.04 rad, opening fast from 0.06 to 0.16). Its mouth is drawn
# open inside since (calibration.AVATAR_OPENING: open from the first hundredths of a radian);
# read through that, the same settings drive /i/ past half of /a/'s jaw, which the synthesized-
# speech tests do not allow, and the clips they were chosen on are not kept to choose again.
LEARNED_OPENING = ((0.0, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.2, 0.25, 0.3, 0.35, 0.4),
                   (0.0, 0.011, 0.025, 0.055, 0.092, 0.118, 0.219, 0.303, 0.379, 0.466, 0.516, 0.571, 0.579))

# Vowel prototypes as speaker-normalised log formants (z1, z2): the corners of the vowel space of
# Peterson & Barney / Hillenbrand averages read against SpeakerNorm's prior.
VOWEL_PROTOTYPES: dict[str, tuple[float, float]] = {
    "aa": (1.2, -0.6), "E": (0.3, 0.9), "ih": (-1.2, 1.2), "oh": (0.4, -1.6), "ou": (-1.3, -1.6),
}


class AudioUnavailableError(RuntimeError):
    """No audio input here (no PortAudio library, no sounddevice, or no input device)."""


def classify_viseme(frame: AudioFrame, dip_pp_db: float = 20.0) -> str:
    """One of VISEMES for an analysed frame (see the module docstring for the rules)."""
    if not frame.active:
        return "sil"
    # Down at the noise floor inside speech: a stop closure if the sound just fell there from a
    # vowel, else a pause between words (the jaw relaxes shut, the lips do not press); whatever
    # the noise looks like spectrally, it is not a fricative.
    if frame.quiet:
        return "PP" if frame.local_dip_db > dip_pp_db else "sil"
    # Fricatives: most energy above 2.5 kHz, noise-like, unless it is a whispered vowel (the
    # formant reader found one). /f/ is weak and flat; /s/ is centred high (5+ kHz); /sh/ lower.
    if frame.hf_ratio > 0.45 and frame.zcr > 0.2 and not frame.sonorant:
        if frame.flatness > 0.35 and frame.level < 0.6:
            return "FF"
        return "SS" if frame.centroid > 4500.0 else "CH"
    # Lips closed: a fast deep drop inside speech (stop closure, near silence) or a nasal murmur
    # (all energy below 400 Hz, 10+ dB quieter than the vowel just before). Measured against the
    # loudest frame of the last 150 ms, not against the speech peak of the last seconds: real
    # speech has unstressed words 20 dB under its stressed syllables, and closing the mouth on
    # them put it out of step with the real speakers' (scripts/fit_lipsync.py's clips: held-out
    # correlation of the jaw at lag 0 0.14 -> 0.17 on average over five clips, dev clip -0.01 -> 0.09).
    if frame.local_dip_db > dip_pp_db or (frame.lf_ratio > 0.8 and frame.local_dip_db > 10.0):
        return "PP"
    if not frame.sonorant:
        return "E"
    best, best_d = "E", math.inf
    for name, (p1, p2) in VOWEL_PROTOTYPES.items():
        d = (frame.z1 - p1) ** 2 + 0.5 * (frame.z2 - p2) ** 2  # F2 varies more across speakers
        if d < best_d:
            best, best_d = name, d
    return best


class Articulation(NamedTuple):
    """Targets of one frame: jaw 0..1 of the maximum; lip components 0..1."""

    jaw: float
    closure: float
    lip_teeth: float
    rounding: float
    spreading: float
    lips_apart: float


def articulation(frame: AudioFrame, viseme: str, jaw_rule: JawRule = JAW) -> Articulation:
    """The mouth's targets for an analysed frame and its viseme (see the module docstring)."""
    if viseme in ("sil", "PP"):
        return Articulation(0.0, 1.0 if viseme == "PP" else 0.0, 0.0, 0.0, 0.0, 0.0)
    # Loudness only scales: a quiet stretch opens less than a loud one, a whisper still articulates.
    gain = 0.55 + 0.45 * frame.level
    if viseme in CONSONANT_OPENNESS:
        return Articulation(CONSONANT_OPENNESS[viseme] * gain, 0.0, 1.0 if viseme == "FF" else 0.0, 0.0,
                            0.3 if viseme == "SS" else 0.0, 0.0)
    if not frame.sonorant:  # voiced but no formants read (a stop burst, a noisy frame): neutral
        return Articulation(0.35 * gain, 0.0, 0.0, 0.0, 0.0, 0.3 * gain)
    # F1 one spread above the speaker's middle is an open vowel, one below a close one.
    openness = min(1.0, max(0.0, jaw_rule.base + jaw_rule.per_z1 * frame.z1))
    jaw = (jaw_rule.floor + (1.0 - jaw_rule.floor) * openness) * (1.0 - jaw_rule.loudness * (1.0 - frame.level))
    # Unrounded vowels lie near the line from /i/ (z -1.4, 1.3) to /a/ (1.2, -0.5) in the
    # normalised (F1, F2) plane: the tongue alone moves along it. Rounding lowers F2 below it
    # (/o/, /u/); an open back /a/ has a low F2 from the tongue, and stays unrounded.
    below = 1.3 - 0.69 * (frame.z1 + 1.4) - frame.z2
    rounding = min(1.0, max(0.0, 0.6 * (below - 0.3)))
    # Spreading raises F2 (/i/, /e/).
    spreading = min(1.0, max(0.0, 0.8 * (frame.z2 - 0.1)))
    # A close vowel still parts the lips (the lower lip drops a little off the teeth).
    return Articulation(jaw, 0.0, 0.0, rounding * gain, spreading * gain, (0.3 + 0.7 * openness) * gain)


_BUNDLED: list[MouthRegressor] = []


def bundled_mouth_model() -> MouthRegressor:
    """A fresh copy of the package's learned mouth-opening model (loaded from disk once)."""
    import copy

    if not _BUNDLED:
        _BUNDLED.append(MouthRegressor.load())
    return copy.deepcopy(_BUNDLED[0])


class LipFrame(NamedTuple):
    """time_s: window centre, seconds since the first sample pushed; expr: (E,) weights in the given expr_names order; jaw: radians."""

    time_s: float
    expr: np.ndarray
    jaw: float
    viseme: str
    loudness: float


class LipSync:
    """Audio -> (jaw opening, expression weights) per hop, streaming.

    expr_names: the head model's expression names; shapes use ARKit-style names and any name the
    model lacks is ignored. max_jaw: jaw rotation (radians, pose[6]) of a loud open vowel.
    """

    def __init__(self, expr_names: list[str], sample_rate: int = 16000, max_jaw: float = 0.35,
                 attack_s: float = 0.03, release_s: float = 0.08, closure_s: float = 0.012,
                 jaw_rule: JawRule = JAW, mouth_model: MouthRegressor | None | str = "bundled",
                 learned: LearnedJaw = LEARNED) -> None:
        self.analyzer = AudioAnalyzer(sample_rate)
        self.jaw_rule = jaw_rule
        # The learned mouth opening (None: the formant rule alone); "bundled": the package's asset.
        self.mouth_model = bundled_mouth_model() if isinstance(mouth_model, str) else mouth_model
        if self.mouth_model is not None:
            self.mouth_model.reset()
        self.learned = learned
        self.expr_names = list(expr_names)
        self.max_jaw = max_jaw
        index = {n: i for i, n in enumerate(self.expr_names)}

        def vec(shape: dict[str, float]) -> np.ndarray:
            v = np.zeros(len(self.expr_names), np.float32)
            for name, w in shape.items():
                if name in index:
                    v[index[name]] = w
            return v

        # (6, E): rows in Articulation's order after the jaw.
        self._basis = np.stack([vec(CLOSURE), vec(LIP_TEETH), vec(ROUND), vec(SPREAD), vec(OPEN_LIPS)])
        self._shapes = {vis: vec(SHAPES.get(vis, {})) for vis in VISEMES}
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
            art = articulation(fr, vis, self.jaw_rule)
            jaw_target = self.max_jaw * art.jaw
            if self.mouth_model is not None:
                # Stepped on every hop (silences included), so its context is the real past.
                z = self.mouth_model.step(hop_features(fr))
                # Only where the rule reads a vowel or another sonorant: pauses, closures and
                # frication keep the rule's shut or nearly shut jaw (the synthesized-speech checks:
                # silences and bilabial closures shut, a hiss does not open the mouth).
                if fr.sonorant and vis not in ("sil", "PP", "FF", "SS", "CH"):
                    jaws, openings = LEARNED_OPENING
                    seen = min(max(self.learned.centre + self.learned.per_z * z, 0.0), openings[-1])
                    learned_jaw = min(float(np.interp(seen, openings, jaws)), self.max_jaw)
                    jaw_target = self.learned.share * learned_jaw + (1.0 - self.learned.share) * jaw_target
            expr_target = np.asarray(art[1:], np.float32) @ self._basis
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
                 progress: Callable[[float], None] | None = None, sample_rate: int = 16000,
                 lead_s: float = MOUTH_LEAD_S) -> Motion:
    """Mouth motion for an audio file at `fps` (jaw in pose[:, 6], expression by name).

    Frame i shows the mouth of the sound at i / fps + lead_s (the mouth leads the sound).
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
    t_out = np.arange(n) / fps + lead_s
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

"""Speech to mouth on real speakers: does the driven avatar's mouth follow the real one?

For every clip of the real development set (SAVATAR_REAL_DIR, default ../shared/real beside the
repository) that has sound (ffmpeg extracts it: the one on PATH, else the binary of the
`imageio-ffmpeg` package from the `judge` extra; clips without an audio stream, or with a silent
one, are left out): `lipsync_file` on the clip's audio drives the default avatar at the clip's
frame rate; MediaPipe measures the mouth opening (inner lips over the inter-ocular distance,
savatar.core.reenact.face_signals) on the real frames and on frontal renders of the avatar; the
two series are correlated over the clip at lags of -3..3 frames (the lead of the mouth that fits
best is MOUTH_LEAD_S minus the best lag). A strip of a stretch of each clip (real mouth above, avatar
below) goes to bench/results/lipsync_real/. The real frames' mouth series (and landmarks) are
cached there per clip (keyed by the file's size and modification time), so MediaPipe runs on a
clip's real frames once; delete bench/results/lipsync_real/cache to measure them again. Also the synthesized-speech checks (espeak-ng, when
installed): the jaw in silent gaps, and closed at the bilabial closures of papa, mama, baby.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from bench import entry

REAL_DIR = Path(os.environ.get("SAVATAR_REAL_DIR", Path(__file__).resolve().parents[2] / "shared" / "real"))
OUT_DIR = Path(__file__).resolve().parent / "results" / "lipsync_real"
SR = 16000
LAGS = range(-3, 4)
RENDER_SIDE = 320


CACHE_DIR = OUT_DIR / "cache"


def ffmpeg_exe() -> str | None:
    """ffmpeg on PATH, else the binary shipped in the imageio-ffmpeg wheel (judge extra), else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the wheel has no binary for this platform
        return None


def _extract_audio(video: Path, wav: Path) -> bool:
    """The clip's sound as 16 kHz mono WAV; False when it has none (or only digital silence)."""
    proc = subprocess.run([ffmpeg_exe() or "ffmpeg", "-v", "error", "-y", "-i", str(video), "-vn", "-ac", "1", "-ar", str(SR), str(wav)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not wav.exists():
        return False
    from savatar.core.drive.lipsync import read_audio

    x, _ = read_audio(wav)
    return len(x) > SR // 2 and float(np.abs(x).max()) > 1e-3


def _lagged(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    """Correlation of a[i] with b[i - lag] (lag > 0: b, the avatar, is shown lag frames later)."""
    from savatar.core.reenact.face_signals import correlation

    if lag > 0:
        return correlation(a[lag:], b[:-lag])
    if lag < 0:
        return correlation(a[:lag], b[-lag:])
    return correlation(a, b)


class _Avatar:
    """The default avatar, rendered frontally with GL and measured with MediaPipe."""

    def __init__(self) -> None:
        import torch

        from savatar.commands.common import frame_renderer, load_avatar_arg, make_rig
        from savatar.commands.render import head_centre
        from savatar.core.render.camera import orbit_camera

        self.rig = make_rig(load_avatar_arg(None))
        self.names = self.rig.data.expr_names
        self.base = self.rig.avatar.default_expr.numpy()
        self.draw = frame_renderer("gl", (1.0, 1.0, 1.0))
        with torch.no_grad():
            target = head_centre(self.rig.vertices(self.base, np.zeros(15, np.float32)).numpy())
        self.camera = orbit_camera(0.0, 0.0, 0.6, target, RENDER_SIDE, RENDER_SIDE, 30.0)

    def render(self, expr: np.ndarray, pose: np.ndarray) -> np.ndarray:
        from savatar.core.io.pixels import to_uint8

        return to_uint8(self.draw.draw(self.rig.world(expr + self.base, pose, np.zeros(3, np.float32)), self.camera))


def _mouth_open(landmarker, image: np.ndarray) -> tuple[float, np.ndarray | None]:
    from savatar.core.reenact.face_signals import face_signals

    lm = landmarker(image)
    return (face_signals(lm)["mouth_open"], lm) if lm is not None else (float("nan"), None)


def real_mouth(path: Path, landmarker) -> tuple[np.ndarray, list[np.ndarray | None], float]:
    """(mouth opening per frame (F,), landmarks per frame ((478, 3) or None), fps) of a real clip,
    from the cache when the clip has not changed since it was measured."""
    from savatar.core.drive.tracking import VideoReader

    stat = path.stat()
    key = f"{stat.st_size}_{stat.st_mtime_ns}"
    cache = CACHE_DIR / f"{path.stem}_real_mouth.npz"
    if cache.exists():
        data = np.load(cache)
        if str(data["key"]) == key:
            lms = [lm if np.isfinite(lm).all() else None for lm in data["landmarks"]]
            return data["mouth"], lms, float(data["fps"])
    mouth, lms = [], []
    with VideoReader(path) as video:
        fps = video.fps
        for _, rgb in video.frames():
            m, lm = _mouth_open(landmarker, rgb)
            mouth.append(m)
            lms.append(lm)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    stacked = np.stack([lm if lm is not None else np.full((478, 3), np.nan) for lm in lms])
    np.savez(cache, key=key, mouth=np.array(mouth), landmarks=stacked, fps=fps)
    return np.array(mouth), lms, float(fps)


def real_frames(path: Path) -> list[np.ndarray]:
    """The clip's frames, (H, W, 3) uint8 RGB each."""
    from savatar.core.drive.tracking import VideoReader

    with VideoReader(path) as video:
        return [rgb for _, rgb in video.frames()]


def _mouth_crop(image: np.ndarray, lm: np.ndarray | None, side: int = 128) -> np.ndarray:
    """A square around the mouth, 1.6 inter-ocular distances wide, resized to side."""
    from PIL import Image

    from savatar.core.reenact.face_signals import inter_ocular

    if lm is None:
        return np.zeros((side, side, 3), np.uint8)
    c = lm[[13, 14, 61, 291], :2].mean(0)
    half = 0.8 * inter_ocular(lm)
    x0, y0 = int(c[0] - half), int(c[1] - half)
    x1, y1 = int(c[0] + half), int(c[1] + half)
    h, w = image.shape[:2]
    pad = np.pad(image, ((h, h), (w, w), (0, 0)), mode="edge")
    crop = pad[y0 + h:y1 + h, x0 + w:x1 + w]
    return np.asarray(Image.fromarray(crop).resize((side, side)))


def _strip(real: list[np.ndarray], avatar: list[np.ndarray], path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.concatenate([np.concatenate(real, 1), np.concatenate(avatar, 1)], 0)).save(path)


def _clip(path: Path, avatar: _Avatar, landmarker, tmp: Path) -> dict[str, float] | None:
    from savatar.core.drive.lipsync import MOUTH_LEAD_S, lipsync_file

    wav = tmp / f"{path.stem}.wav"
    if not _extract_audio(path, wav):
        return None
    real, real_lm, fps = real_mouth(path, landmarker)
    motion = lipsync_file(wav, avatar.names, fps=fps)
    n = min(len(real), len(motion))
    rendered, rendered_lm, renders = [], [], []
    for i in range(n):
        image = avatar.render(motion.expr[i], motion.pose[i])
        m, lm = _mouth_open(landmarker, image)
        rendered.append(m)
        rendered_lm.append(lm)
        renders.append(image)
    a, b = np.array(real[:n]), np.array(rendered)
    corr = {lag: _lagged(a, b, lag) for lag in LAGS}
    near = {lag: corr[lag] for lag in (-1, 0, 1)}
    best_near = max(near, key=lambda k: np.nan_to_num(near[k], nan=-2))
    best = max(corr, key=lambda k: np.nan_to_num(corr[k], nan=-2))
    # Strip: two seconds from the middle of the clip, every other frame.
    mid = n // 2
    pick = list(range(max(0, mid - int(fps)), min(n, mid + int(fps)), 2))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    frames = real_frames(path)
    _strip([_mouth_crop(frames[i], real_lm[i]) for i in pick], [_mouth_crop(renders[i], rendered_lm[i]) for i in pick],
           OUT_DIR / f"{path.stem}_strip.png")
    np.savez(OUT_DIR / f"{path.stem}_mouth.npz", real=a, avatar=b, fps=fps)
    name = path.stem
    out = {f"{name}_corr_lag0_r": corr[0], f"{name}_corr_best_within_1_frame_r": near[best_near],
           f"{name}_best_lag_within_3_frames": float(best), f"{name}_corr_at_best_lag_r": corr[best],
           f"{name}_best_lead_ms": (MOUTH_LEAD_S - best / fps) * 1e3,
           f"{name}_frames_scored": float(np.isfinite(a).sum())}
    for lag in LAGS:
        out[f"{name}_corr_lag{lag:+d}_r"] = corr[lag]
    return out


def _espeak(text: str, tmp: Path) -> np.ndarray:
    from savatar.core.drive.lipsync import read_audio, resample

    wav = tmp / f"say_{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    x, sr = read_audio(wav)
    x = resample(x, sr, SR)
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    return x[loud[0]:loud[-1] + 1]


def _espeak_checks(names: list[str], tmp: Path) -> dict[str, float]:
    """Jaw in 0.5 s silent gaps between sentences (max after the first 100 ms) and the share of
    bilabial closures (papa, mama, baby) where the jaw gets under 0.06 rad."""
    from savatar.core.drive.lipsync import LipSync

    parts = [_espeak(t, tmp) for t in ("Hello there, how are you doing today?",
                                        "The quick brown fox jumps over the lazy dog.")]
    gap = np.zeros(SR // 2, np.float32)
    x = np.concatenate([parts[0], gap, parts[1], np.zeros(SR // 4, np.float32)])
    frames = LipSync(names, SR).push(x)
    t = np.array([f.time_s for f in frames])
    jaw = np.array([f.jaw for f in frames])
    t0 = len(parts[0]) / SR
    in_gap = (t > t0 + 0.1) & (t < t0 + 0.48)
    closed = 0
    words = ("papa", "mama", "baby")
    for w in words:
        y = _espeak(w, tmp)
        fr = LipSync(names, SR).push(np.concatenate([y, np.zeros(SR // 4, np.float32)]))
        tt = np.array([f.time_s for f in fr])
        jj = np.array([f.jaw for f in fr])
        middle = (tt > 0.15 * len(y) / SR) & (tt < 0.85 * len(y) / SR)
        closed += int(jj[middle].min() < 0.06)
    return {"espeak_gap_max_jaw_rad": float(jaw[in_gap].max()), "espeak_speech_max_jaw_rad": float(jaw.max()),
            "espeak_bilabials_closed_fraction": closed / len(words)}


def _espeak_strip(avatar: _Avatar, landmarker, tmp: Path) -> None:
    """The default avatar saying a sentence (synthesized: no real person), 12 frames at 15 fps."""
    from savatar.core.drive.lipsync import lipsync_file
    from scipy.io import wavfile

    x = _espeak("Hello, my name is Bob.", tmp)
    wav = tmp / "strip.wav"
    wavfile.write(str(wav), SR, (np.clip(x, -1, 1) * 32767).astype(np.int16))
    motion = lipsync_file(wav, avatar.names, fps=15.0)
    crops = []
    for i in range(min(len(motion), 16)):
        image = avatar.render(motion.expr[i], motion.pose[i])
        crops.append(_mouth_crop(image, _mouth_open(landmarker, image)[1]))
    from PIL import Image

    Image.fromarray(np.concatenate(crops, 1)).save(OUT_DIR / "espeak_strip.png")


@entry("lipsync_real")
def lipsync_real() -> dict[str, float]:
    from savatar.core.drive.face_landmarks import FaceLandmarker

    if ffmpeg_exe() is None:
        raise RuntimeError("needs ffmpeg to read the clips' sound: on PATH, or the judge extra "
                           "(pip install -e '.[judge]', imageio-ffmpeg)")
    clips = sorted(REAL_DIR.glob("*.mp4")) if REAL_DIR.is_dir() else []
    if not clips:
        raise RuntimeError(f"no real clips in {REAL_DIR} (set SAVATAR_REAL_DIR)")
    avatar = _Avatar()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, FaceLandmarker(static_images=True) as landmarker:
        for clip in clips:
            result = _clip(clip, avatar, landmarker, Path(tmp))
            if result is not None:
                out.update(result)
        out["clips_with_speech"] = float(sum(k.endswith("_corr_lag0_r") for k in out))
        if shutil.which("espeak-ng"):
            out.update(_espeak_checks(avatar.names, Path(tmp)))
            _espeak_strip(avatar, landmarker, Path(tmp))
    return out

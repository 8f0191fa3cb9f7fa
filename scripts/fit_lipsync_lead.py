"""Measure lipsync.MOUTH_LEAD_S (how much earlier than its sound the mouth moves in file mode) on
real talking clips, leave-one-clip-out, and print each clip's held-out correlation.

For every clip with sound in the given folders, the real speaker's mouth opening per frame
(MediaPipe, inner lips over the inter-ocular distance; cached by bench lipsync_real in
bench/results/lipsync_real/cache) is correlated with LipSync's jaw read `lead` seconds ahead.
For each held-out clip the lead (0-200 ms in 20 ms steps) is the one with the best mean
correlation over the other clips; the held-out clip is then scored at that lead, at lag 0 and at
the best lag within +-1 frame (as bench lipsync_real scores renders), next to the current
MOUTH_LEAD_S. Finally all clips together give the lead to write into savatar/core/drive/lipsync.py.
Only the lead is fitted: one constant.

    .venv/bin/python scripts/fit_lipsync_lead.py DIR [DIR ...]

Never measure on the held-out judging clips (../shared/real/README.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEADS_S = np.arange(0.0, 0.201, 0.02)


def clip_data(dirs: list[Path]) -> dict[str, dict]:
    """{clip: {"audio": (N,) float32 at 16 kHz, "mouth": (F,), "fps": float}} for the clips with sound."""
    sys.path.insert(0, str(ROOT))
    from bench.bench_lipsync_real import SR, _extract_audio, real_mouth
    from savatar.core.drive.face_landmarks import FaceLandmarker
    from savatar.core.drive.lipsync import read_audio

    out = {}
    with tempfile.TemporaryDirectory() as tmp, FaceLandmarker(static_images=True) as landmarker:
        for d in dirs:
            for path in sorted(d.glob("*.mp4")):
                wav = Path(tmp) / f"{path.stem}.wav"
                if not _extract_audio(path, wav):
                    continue
                mouth, _, fps = real_mouth(path, landmarker)
                x, sr = read_audio(wav)
                assert sr == SR
                out[path.stem] = {"audio": x, "mouth": mouth, "fps": fps}
    return out


def jaw_track(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times (T,), jaw (T,) radians) of LipSync over 16 kHz audio."""
    from savatar.core.drive.lipsync import LipSync

    frames = LipSync([], 16000).push(np.concatenate([audio, np.zeros(400, np.float32)]))
    return np.array([f.time_s for f in frames]), np.array([f.jaw for f in frames])


def scores(mouth: np.ndarray, fps: float, t: np.ndarray, jaw: np.ndarray, lead: float) -> tuple[float, float]:
    """(correlation at lag 0, best within +-1 frame) of the real mouth and the jaw read lead ahead."""
    from savatar.core.reenact.face_signals import correlation

    b = np.interp(np.arange(len(mouth)) / fps + lead, t, jaw)
    lags = (correlation(mouth, b), correlation(mouth[1:], b[:-1]), correlation(mouth[:-1], b[1:]))
    return lags[0], max(np.nan_to_num(v, nan=-2.0) for v in lags)


def best_lead(clips: dict, names: list[str]) -> float:
    mean = [np.mean([scores(clips[c]["mouth"], clips[c]["fps"], *clips[c]["jaw"], lead)[0] for c in names])
            for lead in LEADS_S]
    return float(LEADS_S[int(np.argmax(mean))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="folders of real talking clips (.mp4 with sound)")
    args = parser.parse_args()
    from savatar.core.drive.lipsync import MOUTH_LEAD_S

    clips = clip_data(args.dirs)
    if len(clips) < 2:
        print(f"need at least two real clips with sound, found {len(clips)}", file=sys.stderr)
        raise SystemExit(2)
    for c in clips:
        clips[c]["jaw"] = jaw_track(clips[c]["audio"])
    names = sorted(clips)
    now = f"at {MOUTH_LEAD_S * 1e3:.0f} ms"
    print(f"{'held-out clip':28s} {'lead ms':>8s} {'lag 0':>6s} {'+-1':>6s}   {now:>14s}")
    held, before = [], []
    for c in names:
        lead = best_lead(clips, [n for n in names if n != c])
        held.append(scores(clips[c]["mouth"], clips[c]["fps"], *clips[c]["jaw"], lead))
        before.append(scores(clips[c]["mouth"], clips[c]["fps"], *clips[c]["jaw"], MOUTH_LEAD_S))
        print(f"{c:28s} {lead * 1e3:8.0f} {held[-1][0]:6.2f} {held[-1][1]:6.2f}   {before[-1][0]:6.2f} {before[-1][1]:6.2f}")
    print(f"{'mean':28s} {'':8s} {np.mean([h[0] for h in held]):6.2f} {np.mean([h[1] for h in held]):6.2f}   "
          f"{np.mean([h[0] for h in before]):6.2f} {np.mean([h[1] for h in before]):6.2f}")
    print(f"\nall clips: MOUTH_LEAD_S = {best_lead(clips, names):.2f}")


if __name__ == "__main__":
    main()

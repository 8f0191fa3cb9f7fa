"""Side-by-side strips of speech-driven mouth: a real speaker's frames above, the default avatar
driven by the same clip's sound (lipsync_file, file mode with its lead) below, every other frame
of stretches of the clip (one pair of rows per --start), mouth crops (1.6 inter-ocular distances
wide, found by MediaPipe), each frame's time in the clip written on the real one.

    .venv/bin/python scripts/lipsync_strip.py CLIP.mp4 --start 1.6 5.0 --seconds 2.0 -o docs/lipsync_real.png
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--start", type=float, nargs="+", default=[0.0], help="seconds, one per stretch")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--step", type=int, default=2, help="every step-th frame")
    parser.add_argument("--side", type=int, default=96, help="pixels of a crop")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from PIL import Image, ImageDraw

    from bench.bench_lipsync_real import _Avatar, _extract_audio, _mouth_crop, _mouth_open, real_frames, real_mouth
    from savatar.core.drive.face_landmarks import FaceLandmarker
    from savatar.core.drive.lipsync import lipsync_file

    with tempfile.TemporaryDirectory() as tmp, FaceLandmarker(static_images=True) as landmarker:
        wav = Path(tmp) / "sound.wav"
        if not _extract_audio(args.clip, wav):
            print(f"{args.clip}: no sound", file=sys.stderr)
            raise SystemExit(2)
        _, lms, fps = real_mouth(args.clip, landmarker)
        frames = real_frames(args.clip)
        avatar = _Avatar()
        motion = lipsync_file(wav, avatar.names, fps=fps)
        n = int(round(args.seconds * fps / args.step))
        rows = []
        for start in args.start:
            first = int(round(start * fps))
            pick = [i for i in range(first, first + n * args.step, args.step) if i < min(len(frames), len(motion))]
            top, bottom = [], []
            for i in pick:
                top.append(_mouth_crop(frames[i], lms[i], args.side))
                render = avatar.render(motion.expr[i], motion.pose[i])
                bottom.append(_mouth_crop(render, _mouth_open(landmarker, render)[1], args.side))
            pair = Image.fromarray(np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0))
            draw = ImageDraw.Draw(pair)
            for k, i in enumerate(pick):  # time stamps, seconds into the clip
                draw.text((k * args.side + 3, 2), f"{i / fps:.2f}", fill=(255, 255, 0))
            rows.append(np.asarray(pair))
    width = max(r.shape[1] for r in rows)
    gap = np.full((args.side // 8, width, 3), 255, np.uint8)
    pad = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    out = np.concatenate([x for r in pad for x in (r, gap)][:-1], 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(args.out)
    print(f"wrote {args.out}: {len(rows)} stretches of {args.seconds:.1f} s")


if __name__ == "__main__":
    main()

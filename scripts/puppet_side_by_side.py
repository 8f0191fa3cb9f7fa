"""Real faces and the default avatar puppeteered by them, side by side: a grin, a frown, a blink,
raised brows and a head tilt, from the real development clips (docs/puppet_side_by_side.png).

Each clip is tracked with the default avatar's identity, retargeted onto it (the driver's
neutral from the clip's resting frames, expressions read in the basis MediaPipe sees on the
avatar's renders: savatar.core.drive.retarget), and rendered with the gl renderer in the clip's
camera. The moment shown is the clip's frame where MediaPipe's signal on the real face is most
extreme (largest mouth width, lowest or highest brows, most closed eyes, largest roll from the
clip's median). Top row real, bottom row avatar, each cropped around the real face.

Only the LivePortrait example clips (MIT licence) are used, not the HDTF speech clip.

    .venv/bin/python scripts/puppet_side_by_side.py [--real-dir DIR] [-o PNG]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ("grin_gaze", "frown_turn", "talk_glasses")
# (label, clips searched, signal, +1 largest / -1 smallest / 0 farthest from the clip's median)
MOMENTS = (("grin", ("grin_gaze",), "mouth_width", 1), ("frown", ("frown_turn",), "brow_height", -1),
           ("blink", CLIPS, "eye_open", -1), ("raised brows", ("frown_turn",), "brow_height", 1),
           ("head tilt", CLIPS, "head_roll", 0))
TILE = 256


def _crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A square around the face (1.5 x the landmarks' extent), resized to TILE."""
    from PIL import Image

    lo, hi = landmarks.min(0), landmarks.max(0)
    centre, half = (lo + hi) / 2, 0.75 * float((hi - lo).max())
    h, w = image.shape[:2]
    box = [int(round(centre[0] - half)), int(round(centre[1] - half)), int(round(centre[0] + half)),
           int(round(centre[1] + half))]
    padded = np.full((h + 2 * w, w + 2 * h, 3), 255, np.uint8)  # white beyond the frame
    padded[w:w + h, h:h + w] = image
    sub = padded[box[1] + w:box[3] + w, box[0] + h:box[2] + h]
    return np.asarray(Image.fromarray(sub).resize((TILE, TILE), Image.LANCZOS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-dir", type=Path,
                        default=Path(os.environ.get("SAVATAR_REAL_DIR", ROOT.parent / "shared" / "real")))
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "puppet_side_by_side.png")
    args = parser.parse_args()
    missing = [c for c in CLIPS if not (args.real_dir / f"{c}.mp4").is_file()]
    if missing:
        print(f"puppet_side_by_side: {args.real_dir} has no {missing[0]}.mp4 (give --real-dir)", file=sys.stderr)
        return 2

    from dataclasses import replace

    from PIL import Image, ImageDraw

    sys.path.insert(0, str(ROOT))
    from bench.display import x_display
    from savatar.commands.common import tracking_bar
    from savatar.core.drive.retarget import Retargeter
    from savatar.core.build.default_avatar import default_avatar
    from savatar.core.gaussians.rig import Rig
    from savatar.core.io.pixels import to_uint8
    from savatar.core.reenact.face_signals import face_signals
    from savatar.core.reenact.reenact import reenact, track_clip

    avatar = default_avatar()
    rig = Rig.of(avatar)
    clips, signals = {}, {}
    for name in CLIPS:
        with tracking_bar(f"track {name}") as progress:
            clip = track_clip(args.real_dir / f"{name}.mp4", avatar, rig.data, progress=progress)
        rt = Retargeter.for_clip(rig.data, clip.K, clip.landmarks, clip.fps, shape=avatar.shape.numpy(),
                                 static_offset=avatar.static_offset.numpy())
        expr, pose, trans = rt.refit_all(clip.landmarks, clip.expr, clip.pose, clip.translation, fps=clip.fps)
        clips[name] = replace(clip, expr=expr, pose=pose, translation=trans)
        signals[name] = [face_signals(p) if p is not None else None for p in clip.landmarks]

    picks = []
    for label, where, signal, sign in MOMENTS:
        best = None
        for name in where:
            values = np.array([s[signal] if s is not None else np.nan for s in signals[name]])
            score = np.abs(values - np.nanmedian(values)) if sign == 0 else sign * (values - np.nanmedian(values))
            k = int(np.nanargmax(score))
            if best is None or score[k] > best[0]:
                best = (score[k], name, k)
        picks.append((label, best[1], best[2]))

    tiles = []
    with x_display():
        from savatar.gl.splat_renderer import SplatRenderer

        splat = SplatRenderer()

        def draw(g, cam):
            image = splat.render(g, cam, (1.0, 1.0, 1.0))
            return image.rgb, image.alpha[..., 0]

        for label, name, k in picks:
            clip = clips[name]
            frame = next(reenact(clip, avatar, draw, self_reenactment=False, rig=rig, frames=[k]))
            marks = clip.landmarks[k]
            tiles.append((f"{label} ({name} {int(clip.indices[k])})", _crop(frame.real, marks),
                          _crop(to_uint8(frame.render), marks)))
            print(f"{label}: {name} frame {int(clip.indices[k])}", file=sys.stderr)

    gap, head = 6, 22
    sheet = Image.new("RGB", (len(tiles) * (TILE + gap) - gap, head + 2 * TILE + gap), "white")
    pen = ImageDraw.Draw(sheet)
    for i, (text, real, render) in enumerate(tiles):
        x = i * (TILE + gap)
        pen.text((x + 4, 5), text, fill="black")
        sheet.paste(Image.fromarray(real), (x, head))
        sheet.paste(Image.fromarray(render), (x, head + TILE + gap))
        if i == 0:
            for y, word in ((head, "real"), (head + TILE + gap, "avatar")):
                pen.rectangle((x, y, x + 44, y + 16), fill="white")
                pen.text((x + 4, y + 2), word, fill="black")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

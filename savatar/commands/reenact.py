"""`savatar reenact`: animate an avatar with a video of a face, frame for frame, and say how
faithful it was."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from savatar.cli_args import UserError
from savatar.core.render.camera import REAL_FOV_Y_DEG
from savatar.commands.common import frame_renderer, load_avatar_arg, make_rig, parse_color, tracking_bar
from savatar.commands.progress import progress_bar
from savatar.commands.render import mux_audio


def cmd_reenact(args: argparse.Namespace) -> int:
    from savatar.core.io.atomic import atomic_path
    from savatar.core.io.pixels import to_uint8
    from savatar.core.io.video_file import VideoFileError, VideoWriter
    from savatar.core.reenact.reenact import reenact, side_by_side, track_clip
    from savatar.core.reenact.scores import summarize

    video = Path(args.video)
    if not video.is_file():
        raise UserError(f"{video}: no such file")
    out = Path(args.output)
    as_video = out.suffix.lower() == ".mp4"
    if not as_video and out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (give a folder for PNG frames, or an .mp4)")
    avatar = load_avatar_arg(args.avatar)
    rig = make_rig(avatar)
    background = parse_color(args.background)
    drawer = frame_renderer(args.backend, background)
    try:
        with tracking_bar("track") as progress:
            clip = track_clip(video, avatar, rig.data, fov_y_deg=args.fov, progress=progress)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if not args.self_reenactment or args.neutral_frame is not None:
        clip = _retarget(clip, avatar, rig.data, args.neutral_frame)

    width = clip.width * (3 if args.side_by_side else 1)
    writer = None
    if as_video:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            writer = VideoWriter(out, clip.fps, width, clip.height)
        except VideoFileError as exc:
            raise UserError(str(exc)) from None
    else:
        out.mkdir(parents=True, exist_ok=True)
    scores = []
    try:
        bar = progress_bar(total=len(clip), desc=f"reenact ({drawer.backend})", unit="frame")
        for f in reenact(clip, avatar, drawer.draw_with_alpha, background, args.self_reenactment, rig=rig):
            image = side_by_side(f) if args.side_by_side else to_uint8(f.render)
            if writer is not None:
                writer.write(image)
            else:
                _write_png(out / f"{f.index:06d}.png", image)
            scores.append(f.scores)
            bar.update(1)
        bar.close()
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, OSError):  # the video changed size or broke off between the two passes
            raise UserError(str(exc)) from None
        raise
    if writer is not None:
        writer.close()
        if args.side_by_side:
            problem = mux_audio(out, video)
            if problem is not None:
                print(f"the side-by-side video has no audio: {problem}")
    summary = summarize(scores)
    if args.metrics:
        report = {"video": str(video), "avatar": args.avatar or "(bundled default avatar)",
                  "self_reenactment": args.self_reenactment, "fps": clip.fps, "width": clip.width,
                  "height": clip.height, "summary": summary, "frames": [s.to_json() for s in scores]}
        with atomic_path(args.metrics) as tmp:
            tmp.write_text(json.dumps(report, indent=1, allow_nan=True))
    print(f"wrote {out}: {len(scores)} frames at {clip.fps:g} fps, {len(summary['frames_without_face'])} without a face"
          f" (pose held); {_summary_line(summary)}")
    return 0


def _retarget(clip, avatar, data, neutral_frame: int | None):
    """The clip refitted with the driver's neutral (frame neutral_frame, else the first second)
    mapped to the avatar's rest face, and calibrated: expression and pose transfer, identity not."""
    from dataclasses import replace

    from savatar.core.drive.retarget import Retargeter

    try:
        rt = Retargeter.for_clip(data, clip.K, clip.landmarks, clip.fps, neutral_frame,
                                 shape=avatar.shape.detach().numpy(), static_offset=avatar.static_offset.detach().numpy())
    except ValueError as exc:
        raise UserError(f"{clip.path}: {exc}") from None
    expr, pose, trans = rt.refit_all(clip.landmarks, clip.expr, clip.pose, clip.translation, fps=clip.fps)
    return replace(clip, expr=expr, pose=pose, translation=trans)


def _write_png(path: Path, rgb) -> None:
    from PIL import Image

    from savatar.core.io.atomic import atomic_path
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def _summary_line(s: dict) -> str:
    parts = []
    if "psnr_mask" in s:
        parts.append(f"PSNR in head mask {s['psnr_mask']:.2f} dB, matted head crop {s['psnr_crop']:.2f} dB, "
                     f"SSIM {s['ssim_crop']:.3f}, coverage {100 * s['coverage']:.1f}%")
    parts.append(f"landmark distance {s['landmark_distance']:.3f} IOD, signal correlation {s['correlation_mean']:.2f}")
    return "; ".join(parts)


def register(sub) -> None:
    p = sub.add_parser("reenact", help="animate an avatar with a video of a face, frame for frame, and score it",
                       description="Track VIDEO with the avatar's identity held fixed and render the avatar in the "
                                   "tracker's camera at the video's own size, frame for frame (frames without a "
                                   "face hold the last pose).")
    p.add_argument("video", help="a video of a face")
    p.add_argument("--avatar", help="avatar .h5 (default: the bundled avatar)")
    p.add_argument("-o", "--output", required=True,
                   help="an .mp4, or a folder (created when missing) for lossless PNG frames 000000.png, ...")
    p.add_argument("--side-by-side", action="store_true",
                   help="real | avatar | per-pixel error in each frame (with the video's audio when ffmpeg is there)")
    p.add_argument("--background", default="1,1,1", help="R,G,B of the background (default white)")
    p.add_argument("--metrics", metavar="M.json", help="write per-frame and mean scores to this JSON file")
    p.add_argument("--self-reenactment", action="store_true",
                   help="the avatar is of the person in the video: also score the pixels (PSNR in the head mask "
                        "and of the matted head crop, SSIM, coverage)")
    p.add_argument("--neutral-frame", type=int, metavar="N",
                   help="frame (from 0) where the face rests, mapped to the avatar's rest face so that the driver's own "
                        "face shape and head tilt do not carry over (default: the first second; with "
                        "--self-reenactment, none unless given)")
    p.add_argument("--fov", type=float, default=REAL_FOV_Y_DEG,
                   help=f"the video camera's vertical field of view in degrees (default {REAL_FOV_Y_DEG:g}, as build assumes)")
    p.add_argument("--backend", default="gl", choices=("gl", "cpu", "gsplat", "auto"), help="renderer (default gl)")
    p.set_defaults(func=cmd_reenact)

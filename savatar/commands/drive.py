"""`savatar track` (video -> motion) and `savatar lipsync` (audio -> motion)."""
from __future__ import annotations

import argparse
from pathlib import Path


from savatar.cli_args import UserError
from savatar.core.render.camera import REAL_FOV_Y_DEG
from savatar.commands.common import load_avatar_arg, tracking_bar
from savatar.commands.progress import progress_bar


def _expr_target(args: argparse.Namespace):
    """Head model whose expression names the motion uses: the avatar's, or the open model's."""
    from savatar.core.gaussians.rig import head_data_for
    from savatar.core.head.flame import FlameFormatError

    try:
        return head_data_for(load_avatar_arg(args.avatar), getattr(args, "flame", None))
    except FlameFormatError as exc:
        raise UserError(str(exc)) from None


def _check_output(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".npz":
        raise UserError(f"{out}: the motion output must be an .npz file")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def cmd_track(args: argparse.Namespace) -> int:
    from savatar.core.drive.motion import save_motion
    from savatar.core.drive.retarget import track_motion
    from savatar.core.drive.tracking import TrackerParams

    out = _check_output(args.output)
    if not Path(args.video).is_file():
        raise UserError(f"{args.video}: no such file")
    data = _expr_target(args)
    try:
        with tracking_bar() as progress:
            motion, report = track_motion(args.video, data, TrackerParams(fov_y_deg=args.fov),
                                          neutral_frame=args.neutral_frame, progress=progress)
    except (OSError, ValueError) as exc:
        text = str(exc)
        raise UserError(text if args.video in text else f"{args.video}: {text}") from None
    save_motion(motion, out)
    print(f"wrote {out}: {len(motion)} frames at {motion.fps:g} fps; {report.summary()}")
    return 0


def cmd_lipsync(args: argparse.Namespace) -> int:
    from savatar.core.drive.lipsync import lipsync_file
    from savatar.core.drive.motion import save_motion

    out = _check_output(args.output)
    if not Path(args.audio).is_file():
        raise UserError(f"{args.audio}: no such file")
    data = _expr_target(args)
    with progress_bar(total=100, desc="lipsync", unit="%") as bar:
        def progress(fraction: float) -> None:
            bar.n = int(100 * fraction)
            bar.refresh()

        try:
            motion = lipsync_file(args.audio, data.expr_names, fps=args.fps, progress=progress)
        except (OSError, ValueError) as exc:
            text = str(exc)
            raise UserError(text if args.audio in text else f"{args.audio}: {text}") from None
    save_motion(motion, out)
    print(f"wrote {out}: {len(motion)} frames at {motion.fps:g} fps")
    return 0


def register(sub) -> None:
    p = sub.add_parser("track", help="track a face in a video into a motion file")
    p.add_argument("video", help="video file (anything OpenCV reads)")
    p.add_argument("--avatar", help="avatar whose head model the motion is for (default: the open head)")
    p.add_argument("--fov", type=float, default=REAL_FOV_Y_DEG,
                   help=f"camera vertical field of view in degrees (default {REAL_FOV_Y_DEG:g}, as build assumes)")
    p.add_argument("--neutral-frame", type=int, metavar="N",
                   help="frame (from 0) where the face rests: it becomes the avatar's rest face (default: the first second)")
    p.add_argument("-o", "--output", required=True, help="output motion .npz")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("lipsync", help="turn speech in an audio file into mouth motion")
    p.add_argument("audio", help="WAV file (FLAC/OGG with the soundfile package)")
    p.add_argument("--avatar", help="avatar whose head model the motion is for (default: the open head)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the motion")
    p.add_argument("-o", "--output", required=True, help="output motion .npz")
    p.set_defaults(func=cmd_lipsync)

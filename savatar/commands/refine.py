"""`savatar refine`: layout-preserving refinement of an avatar against video, images or its
source portraits, with a live progress bar and an optional JSON log (one object per report)."""
from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path


from savatar.cli_args import UserError
from savatar.commands.common import load_avatar_arg, make_rig, tracking_bar
from savatar.commands.progress import progress_bar

# Defaults of savatar.core.refine.frame_sources (tests check they agree), repeated so that
# registering the command does not import OpenCV and the refiner.
VIDEO_SIZE, VIDEO_MAX_FRAMES, VIDEO_FOV_Y_DEG = 384, 200, 50.0


def register(sub) -> None:
    p = sub.add_parser("refine", help="refine an avatar against frames (count and binding never change)",
                       epilog="While it runs: Ctrl-Z pauses (fg resumes), Ctrl-C stops after the current step and "
                              "writes the checkpoint; --resume then continues exactly where it stopped.")
    p.add_argument("avatar", help="avatar .h5 to refine")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", metavar="V", help="monocular video of the avatar's person, tracked first with "
                     "the face tracker (the avatar's own head shape, the tracker's camera)")
    src.add_argument("--images", metavar="DIR",
                     help="folder of images with params.npz (see savatar.core.refine.frame_sources.frames_from_images)")
    src.add_argument("--sources", action="store_true",
                     help="the portraits the avatar was built from (kept in the file by savatar build)")
    v = p.add_argument_group("frames from --video and --sources")
    v.add_argument("--size", type=int, default=VIDEO_SIZE, metavar="PX",
                   help=f"longest side of a frame in pixels (default {VIDEO_SIZE}; refinement time grows with it)")
    v.add_argument("--max-frames", type=int, default=VIDEO_MAX_FRAMES, metavar="N",
                   help=f"--video: use at most N frames (default {VIDEO_MAX_FRAMES})")
    v.add_argument("--stride", type=int, metavar="K",
                   help="--video: use every K-th frame (default: spread --max-frames over the clip)")
    v.add_argument("--fov", type=float, default=VIDEO_FOV_Y_DEG, metavar="DEG",
                   help=f"--video: the camera's vertical field of view in degrees (default {VIDEO_FOV_Y_DEG:g})")
    v.add_argument("--no-crop", action="store_true",
                   help="--video: use whole frames instead of a square crop around the face")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, help="total iterations (default 10000)")
    budget.add_argument("--minutes", type=float, metavar="M",
                        help="refine until M minutes after the command started (tracking a --video included); "
                             "the learning-rate schedule is fitted to the time")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "gsplat"))
    p.add_argument("--held-out", type=int, action="append", metavar="I", help="frame index kept for PSNR, repeatable")
    p.add_argument("--report-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--no-regularization", action="store_true", help="switch the anti-spike penalties off")
    p.add_argument("--tune-frames", action="store_true", help="also fine-tune each frame's expression and pose")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flame", metavar="DIR", help="folder with your FLAME files (or set SAVATAR_FLAME_DIR)")
    p.add_argument("-o", "--output", required=True, help="output avatar .h5 (checkpoints go here too)")
    p.add_argument("--json-log", metavar="FILE", help="write one JSON object per report (appended with --resume)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output")
    p.set_defaults(func=cmd_refine)


def _frames(args: argparse.Namespace, avatar, rig):
    from savatar.core.refine.frame_sources import frames_from_images, frames_from_stored_sources

    if args.images:
        if not Path(args.images).is_dir():
            raise UserError(f"{args.images}: no such folder")
        try:
            return frames_from_images(args.images)
        except (ValueError, OSError) as exc:
            raise UserError(str(exc).splitlines()[0]) from None
    if args.video:
        return _video_frames(args, avatar, rig)
    try:
        return frames_from_stored_sources(avatar, size=args.size)
    except ValueError as exc:
        raise UserError(f"{args.avatar}: {exc}") from None


def _video_frames(args: argparse.Namespace, avatar, rig):
    from savatar.core.refine.frame_sources import frames_from_video

    if not Path(args.video).is_file():
        raise UserError(f"{args.video}: no such file")
    if args.max_frames < 1 or (args.stride is not None and args.stride < 1) or not 1 <= args.fov < 179:
        raise UserError("--max-frames and --stride must be >= 1, --fov between 1 and 179 degrees")
    # FFmpeg's own complaints about a broken file would come before the one-line error.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        with tracking_bar() as progress:
            frames = frames_from_video(args.video, avatar, data=rig.data, size=args.size, max_frames=args.max_frames,
                                       stride=args.stride, fov_y_deg=args.fov, crop=not args.no_crop, progress=progress)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    print(f"tracked {len(frames)} frames with a face from {args.video}")
    return frames


def cmd_refine(args: argparse.Namespace) -> int:
    from savatar.core.refine.refine import Refiner, RefineConfig, report_line
    from savatar.core.render.api import resolve_backend
    from savatar.commands.build_video import SAVE_RESERVE_S, process_start

    start = process_start()
    if args.minutes is not None and not args.minutes > 0:
        raise UserError("--minutes must be > 0")
    # With a time budget the planned count follows the measured pace (TimeBudget); this first
    # guess only shapes the first couple of steps' learning rates.
    args.iters = (10000 if args.minutes is None else 300) if args.iters is None else args.iters
    if args.iters < 1 or args.report_every < 1 or args.checkpoint_every < 0:
        raise UserError("--iters and --report-every must be >= 1, --checkpoint-every >= 0")
    if args.size < 16:
        raise UserError("--size must be at least 16 pixels")
    out = Path(args.output)
    if out.suffix.lower() != ".h5":
        raise UserError(f"{out}: the output must be an .h5 avatar file")
    if args.resume and not out.is_file():
        raise UserError(f"--resume: {out} does not exist yet")
    try:
        resolve_backend(args.backend)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    avatar = load_avatar_arg(args.avatar)
    rig = make_rig(avatar, args.flame)
    frames = _frames(args, avatar, rig)
    held = tuple(args.held_out or ())
    if any(not 0 <= i < len(frames) for i in held):
        raise UserError(f"--held-out: indices must be in 0..{len(frames) - 1}")
    if len(held) >= len(frames):
        raise UserError("--held-out leaves no training frames")
    if len(frames[0].expr) != len(avatar.default_expr):
        raise UserError(f"the frames have {len(frames[0].expr)} expression coefficients, the avatar's head model "
                        f"{len(avatar.default_expr)}")
    cfg = RefineConfig(iterations=args.iters, backend=args.backend, held_out=held, report_every=args.report_every,
                       checkpoint_every=args.checkpoint_every, regularize=not args.no_regularization,
                       tune_frames=args.tune_frames, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    refiner = Refiner(avatar, rig, frames, cfg, output=out)
    if args.resume:
        from savatar.core.io.avatar_file import AvatarFormatError
        try:
            refiner.resume_from(out)
        except (AvatarFormatError, AssertionError) as exc:
            raise UserError(str(exc).splitlines()[0]) from None
    if args.minutes is not None:
        from savatar.core.refine.time_budget import TimeBudget
        refiner.pre_step_hooks.append(TimeBudget(start + 60.0 * args.minutes - SAVE_RESERVE_S))
        cfg.iterations = max(cfg.iterations, refiner.iteration + 300)  # a resumed run may be past the first guess
    log = open(args.json_log, "a" if args.resume else "w") if args.json_log else None
    bar = progress_bar(total=cfg.iterations, initial=refiner.iteration, desc=f"refine ({refiner.backend})", unit="it")

    def on_report(r) -> None:
        bar.total = r.iterations
        bar.update(r.iteration - bar.n)
        bar.set_postfix(report_line(r), refresh=False)
        if r.event:
            bar.write(f"refine: {r.event}")
        if log is not None:
            log.write(json.dumps(r.to_json()) + "\n")
            log.flush()

    # Ctrl-C stops at the end of the current step and still writes the checkpoint; after Ctrl-Z
    # and fg, the rate (and ETA) leaves the suspended time out.
    previous = signal.signal(signal.SIGINT, lambda *_: refiner.stop())
    previous_cont = signal.signal(signal.SIGCONT, lambda *_: refiner.restart_clock())
    try:
        final = refiner.run(on_report)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGCONT, previous_cont)
        bar.close()
        if log is not None:
            log.close()
    psnr = "-" if final.psnr_mask is None else f"{final.psnr_mask:.2f} dB"
    state = "stopped" if final.iteration < cfg.iterations else "done"
    print(f"wrote {out}: {state} at iteration {final.iteration}, loss {final.losses.get('total', float('nan')):.4f}, "
          f"held-out PSNR in mask {psnr}, spikes {100 * final.spike_fraction:.2f}%")
    return 0

"""`savatar build --video CLIP`: an avatar from a selfie video in minutes (issue 16).

Scan the clip and choose a handful of source frames (savatar.core.build.from_video), build from
them, write the built avatar at once (so an interruption never loses it), track the clip's frames
with the built identity (savatar.core.refine.frame_sources.frames_from_video) and refine against
them until the time budget (--minutes, counted from the command's start, tracking included) or
--iters. Ctrl-C during refinement stops after the current step and writes the avatar as it is
then (atomically); the avatar keeps its chosen frames as sources for later `savatar refine
--sources`.
"""
from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

from savatar.cli_args import UserError
from savatar.commands.common import tracking_bar
from savatar.commands.progress import progress_bar

DEFAULT_MINUTES = 2.25  # the whole command on a 2-core CPU for a 10-20 s clip: the last step, held-out
# evaluation and write after the deadline took up to 30 s on a loaded machine (bench video_build)
DEFAULT_SOURCES = 4  # savatar.core.build.source_frames.DEFAULT_SOURCES (not imported: registering stays light)
REFINE_SIZE = 256  # refinement frames' longer side: fewer pixels step faster, but at 192 the held-out frames
# stopped improving after about 20 iterations (bench video_build: 256 px kept improving for 280 on talk_glasses)
REFINE_FRAMES = 40  # frames tracked for refinement (about 0.1 s each)
SAVE_RESERVE_S = 3.0  # refinement ends this long before the budget: the final write
HOLD_OUT = 0.2  # fraction of the tracked frames, the clip's last stretch, held out of training
MIN_FRAMES_TO_HOLD_OUT = 8  # fewer frames are all trained on (and the last state is kept)
EVALUATE_EVERY = 20  # iterations between held-out evaluations (one forward render per held-out frame)
PATIENCE = 6  # evaluations without a gain before refinement stops


def add_video_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("from a video (--video)")
    g.add_argument("--video", metavar="CLIP", help="build from a selfie video (10-20 s of the face turning and "
                   "talking) instead of portraits, then refine against its frames")
    g.add_argument("--sources", type=int, metavar="K",
                   help=f"--video: at most K source frames (default {DEFAULT_SOURCES}): sharp, open-eyed, "
                        "near-neutral, spanning the head's turns")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, metavar="M",
                        help=f"--video: finish within M minutes of wall time, tracking and building included "
                             f"(default {DEFAULT_MINUTES:g})")
    budget.add_argument("--iters", type=int, metavar="N", help="--video: refine exactly N iterations "
                        "instead of for a time (0: build only)")
    g.add_argument("--size", type=int, metavar="PX",
                   help=f"--video: refinement frames' longer side in pixels (default {REFINE_SIZE})")
    g.add_argument("--stop", type=int, metavar="FRAME", help="--video: use only the frames before FRAME")


def check_video_args_unused(args: argparse.Namespace) -> None:
    """UserError when --video's options are given without --video (they would be ignored)."""
    given = [f"--{k}" for k in ("sources", "minutes", "iters", "size", "stop") if getattr(args, k) is not None]
    if given:
        raise UserError(f"{', '.join(given)} only apply with --video")


def _check(args: argparse.Namespace) -> Path:
    out = Path(args.output)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise UserError(f"{out}: the output must be an .h5 file")
    if args.images:
        raise UserError("give portraits or --video, not both")
    if args.generator:
        raise UserError("--generator builds from portraits; it does not take --video")
    if not Path(args.video).is_file():
        raise UserError(f"{args.video}: no such file")
    args.sources = DEFAULT_SOURCES if args.sources is None else args.sources
    if args.sources < 1:
        raise UserError("--sources must be >= 1")
    if args.minutes is not None and not args.minutes > 0:
        raise UserError("--minutes must be > 0")
    if args.iters is not None and args.iters < 0:
        raise UserError("--iters must be >= 0")
    args.size = REFINE_SIZE if args.size is None else args.size
    if args.size < 16:
        raise UserError("--size must be at least 16 pixels")
    if args.stop is not None and args.stop < 1:
        raise UserError("--stop must be >= 1")
    if args.count is not None and not 1 <= args.count <= 2_000_000:
        raise UserError("--count must be between 1 and 2000000")
    return out


def process_start() -> float:
    """time.monotonic() when this process started (Linux: /proc; elsewhere: now), so that a
    budget counts the interpreter's start and imports too, as the user's stopwatch does."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.monotonic() - max(0.0, uptime - started)
    except (OSError, ValueError, IndexError):
        return time.monotonic()


def cmd_build_video(args: argparse.Namespace) -> int:
    start = process_start()
    out = _check(args)
    from savatar.core.build.build import BuildError
    from savatar.core.build.from_video import VideoSourceError, build_from_video
    from savatar.core.io.avatar_file import save_avatar

    # FFmpeg's own complaints about a broken file would come before the one-line error.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    minutes = DEFAULT_MINUTES if args.minutes is None and args.iters is None else args.minutes
    deadline = None if minutes is None else start + 60.0 * minutes - SAVE_RESERVE_S
    bars = []  # made at the first progress: a file refused at once gets its one line and nothing else

    def progress(fraction: float, stage: str) -> None:
        if not bars:
            bars.append(progress_bar(total=100, desc=stage, unit="%", leave=False))
        bars[0].set_description(stage, refresh=False)
        bars[0].update(round(100 * fraction) - bars[0].n)

    try:
        avatar, results, choice, scan = build_from_video(args.video, args.sources, count=args.count or 60000,
                                                         stop=args.stop, progress=progress)
    except (VideoSourceError, BuildError) as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    finally:
        for bar in bars:
            bar.close()
    chosen = {f"frame {scan.stats[i].index}": scan.stats[i] for i in choice.chosen}
    for r in results:
        s = chosen.get(r.name)
        view = f", head yaw {s.yaw:+.0f} pitch {s.pitch:+.0f} degrees" if s is not None and r.ok else ""
        print(r.line() + view)
    used = sum(r.ok for r in results)
    print(f"built from {used} of {len(scan.stats)} frames with a face ({len(choice.rejected)} unusable) "
          f"in {time.monotonic() - start:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_avatar(avatar, out)  # written now: an interruption or a failure below never loses the build
    if args.iters == 0 or (deadline is not None and time.monotonic() >= deadline):
        why = "--iters 0" if args.iters == 0 else "the time budget was used up by building"
        print(f"wrote {out} ({len(avatar)} Gaussians, not refined: {why})")
        return 0
    try:
        return _refine(args, out, avatar, deadline, start)
    except KeyboardInterrupt:
        print(f"interrupted before refinement; {out} holds the built avatar", flush=True)
        return 130


def _refine(args: argparse.Namespace, out: Path, avatar, deadline: float | None, start: float) -> int:
    from savatar.commands.common import make_rig
    from savatar.core.refine.frame_sources import frames_from_video
    from savatar.core.refine.refine import RefineConfig, Refiner, report_line
    from savatar.core.refine.keep_best import KeepBest, held_out_tail
    from savatar.core.refine.time_budget import TimeBudget

    rig = make_rig(avatar)
    try:
        with tracking_bar() as track_progress:
            frames = frames_from_video(args.video, avatar, data=rig.data, size=args.size, max_frames=REFINE_FRAMES,
                                       stop=args.stop, progress=track_progress)
    except (OSError, ValueError) as exc:
        raise UserError(f"{str(exc).splitlines()[0]} ({out} holds the built avatar, not refined)") from None
    # The last stretch of the tracked frames (they come in clip order) is held out of training:
    # refinement keeps its best state by them and stops when they stop improving (KeepBest; more
    # steps on a few dozen frames fit those frames, not the person).
    held = held_out_tail(len(frames), HOLD_OUT, MIN_FRAMES_TO_HOLD_OUT)
    # With a budget the planned count follows the measured pace (TimeBudget); this first guess
    # only shapes the first couple of steps' learning rates.
    planned = args.iters if args.iters is not None else 300
    cfg = RefineConfig(iterations=planned, backend="cpu", report_every=EVALUATE_EVERY, checkpoint_every=0,
                       held_out=held)
    refiner = Refiner(avatar, rig, frames, cfg)
    keep = KeepBest(refiner, patience=PATIENCE if held else None)
    if deadline is not None:
        refiner.pre_step_hooks.append(TimeBudget(deadline))
    bar = progress_bar(total=cfg.iterations, desc=f"refine {len(frames) - len(held)} frames", unit="it")
    interrupted = []

    def on_report(r) -> None:
        keep(r)
        bar.total = r.iterations
        bar.update(r.iteration - bar.n)
        bar.set_postfix(report_line(r), refresh=False)
        if r.event and r.event != "stopped":  # a stop gets its one line below
            bar.write(f"refine: {r.event}")

    def on_interrupt(*_) -> None:
        interrupted.append(True)
        refiner.stop()

    # Ctrl-C stops after the current step; the best state so far is then written (atomically).
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        final = refiner.run(on_report)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    ran = final.iteration
    restored = keep.restore()
    refiner.checkpoint(out)
    if interrupted:
        state = "interrupted (Ctrl-C)"
    elif keep.stopped_early:
        state = "stopped early (the held-out frames no longer improved)"
    else:
        state = "refined"
    best = "" if keep.best_db is None else (f"; kept iteration {keep.best_iteration}, held-out PSNR in mask "
                                            f"{keep.best_db:.2f} dB" + ("" if restored else " (the last)"))
    print(f"wrote {out}: {len(avatar)} Gaussians, {state} after {ran} iterations "
          f"({final.elapsed_s:.0f} s of refinement, {time.monotonic() - start:.0f} s in all){best}")
    return 130 if interrupted else 0

"""`savatar build`: an avatar from one or a few portraits (savatar.core.build.build), or from a
selfie video (--video: savatar.commands.build_video)."""
from __future__ import annotations

import argparse
from pathlib import Path


from savatar.cli_args import UserError
from savatar.commands.build_video import add_video_args, check_video_args_unused
from savatar.commands.progress import progress_bar


def cmd_build(args: argparse.Namespace) -> int:
    """Build, print one status line per input, save; UserError when no input is usable."""
    from savatar.core.build.build import BuildError, build_avatar
    from savatar.core.io.avatar_file import save_avatar

    if args.video:
        from savatar.commands.build_video import cmd_build_video
        return cmd_build_video(args)
    if not args.images:
        raise UserError("give portrait images, or --video CLIP")
    check_video_args_unused(args)
    out = Path(args.output)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise UserError(f"{out}: the output must be an .h5 file")
    args.count_given = args.count
    args.count = 60000 if args.count is None else args.count
    if not 1 <= args.count <= 2_000_000:
        raise UserError("--count must be between 1 and 2000000")
    bar = progress_bar(total=100, desc="build", unit="%", leave=False)

    def progress(fraction: float, stage: str) -> None:
        bar.set_description(stage, refresh=False)
        bar.update(round(100 * fraction) - bar.n)

    try:
        if args.generator:
            avatar, results = _with_generator(args, progress)
        else:
            avatar, results = build_avatar(args.images, count=args.count, progress=progress)
    except BuildError as exc:
        raise UserError(str(exc)) from None
    finally:
        bar.close()
    for r in results:
        print(r.line())
    out.parent.mkdir(parents=True, exist_ok=True)
    save_avatar(avatar, out)
    used = sum(r.ok for r in results)
    print(f"wrote {out} ({len(avatar)} Gaussians from {used} of {len(results)} portraits)")
    return 0


def _with_generator(args: argparse.Namespace, progress):
    """The learned path: one forward pass of a trained generator (savatar.core.build.generator)."""
    from savatar.core.build.generator import CheckpointError, build_from_portraits

    try:
        return build_from_portraits(args.generator, args.images, args.count_given, progress)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def register(sub) -> None:
    p = sub.add_parser("build", help="build an avatar from one or a few portraits, or from a selfie video")
    p.add_argument("images", nargs="*", help="portrait images (any number, any order)")
    p.add_argument("-o", "--output", required=True, help="output avatar .h5")
    p.add_argument("--count", type=int, default=None,
                   help="number of Gaussians (default 60000, or the generator's layout size)")
    p.add_argument("--generator", metavar="CKPT", help="build with a trained generator checkpoint "
                   "(savatar train-generator); default: the parameter-free pipeline")
    add_video_args(p)
    p.set_defaults(func=cmd_build)

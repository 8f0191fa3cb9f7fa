"""`savatar`: the command-line interface. Subcommands live in savatar.commands; user mistakes
print one line and exit 2, never a traceback."""
from __future__ import annotations

import argparse
import sys

from savatar.cli_args import UserError
from savatar.commands import avatar, build, drive, generator, head, reenact, refine, render


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="savatar", description="SpatialAvatar: 3D Gaussian head avatars from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (head, avatar, render, drive, reenact, build, refine, generator):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except UserError as exc:
        print(f"savatar {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"savatar {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

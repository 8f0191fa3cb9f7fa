"""`savatar head`: describe the head model in use."""
from __future__ import annotations

import argparse

from savatar.cli_args import UserError
from savatar.core.head.head_model import HeadModelData


def head_data_arg(flame_dir: str | None) -> HeadModelData:
    """The user's FLAME from flame_dir, else the bundled open head model."""
    if flame_dir:
        from savatar.core.head.flame import FlameFormatError, load_flame
        try:
            return load_flame(flame_dir)
        except FlameFormatError as exc:
            raise UserError(str(exc)) from None
    from savatar.core.head.open_head import load_open_head_data
    return load_open_head_data()


def cmd_head(args: argparse.Namespace) -> int:
    data = head_data_arg(args.flame)
    print(f"head model   {data.name}")
    print(f"vertices     {len(data.v_template)}")
    print(f"faces        {len(data.faces)}")
    print(f"shape        {data.shapedirs.shape[2]} components")
    print(f"expression   {data.exprdirs.shape[2]} components")
    print(f"landmarks    {len(data.lmk_faces)}")
    if data.expr_names and not data.expr_names[0].startswith("expr0"):
        print("expressions  " + " ".join(data.expr_names))
    if data.shape_names and not data.shape_names[0].startswith("shape0"):
        print("shape modes  " + " ".join(data.shape_names))
    return 0


def register(sub) -> None:
    p = sub.add_parser("head", help="describe the head model (open model by default, FLAME with --flame)")
    p.add_argument("--flame", metavar="DIR", help="folder with your FLAME model files (or set SAVATAR_FLAME_DIR)")
    p.set_defaults(func=cmd_head)

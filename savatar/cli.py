"""`savatar`: the command-line interface. Each subcommand lives in a small function below;
user mistakes print one line and exit 2, never a traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from savatar.cli_args import UserError, parse_expr, parse_pose


def cmd_head(args: argparse.Namespace) -> int:
    """Describe the head model in use (the bundled open model, or FLAME with --flame)."""
    data = _head_data(args.flame)
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


def cmd_render_mesh(args: argparse.Namespace) -> int:
    """Shaded render of the head model at an expression and pose."""
    import numpy as np
    import torch
    from PIL import Image

    from savatar.core.camera import orbit_camera
    from savatar.core.head_model import HeadModel
    from savatar.gl.mesh_renderer import MeshRenderer

    data = _head_data(args.flame)
    expr = parse_expr(args.expr, data.expr_names)
    pose = parse_pose(args.pose)
    if args.width <= 0 or args.height <= 0:
        raise UserError("-W and -H must be positive")
    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"{out}: the output must be a .png or .jpg file")
    model = HeadModel(data)
    with torch.no_grad():
        verts = model(expr=torch.from_numpy(expr)[None], pose=torch.from_numpy(pose)[None]).vertices[0].numpy()
    target = 0.5 * (verts.min(0) + verts.max(0))
    cam = orbit_camera(args.yaw, args.pitch, distance=args.distance, target=target,
                       width=args.width, height=args.height, fov_y_deg=30.0)
    colors = data.vertex_colors if data.vertex_colors is not None else np.full((len(verts), 3), 0.8, np.float32)
    img = MeshRenderer(data.faces, colors).render(verts, cam)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(out)
    print(f"wrote {out}")
    return 0


def _head_data(flame_dir: str | None):
    if flame_dir:
        from savatar.core.flame import FlameFormatError, load_flame
        try:
            return load_flame(flame_dir)
        except FlameFormatError as exc:
            raise UserError(str(exc)) from None
    from savatar.core.open_head import load_open_head_data
    return load_open_head_data()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="savatar", description="SpatialAvatar: 3D Gaussian head avatars from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("head", help="describe the head model (open model by default, FLAME with --flame)")
    p.add_argument("--flame", metavar="DIR", help="folder with your FLAME model files (or set SAVATAR_FLAME_DIR)")
    p.set_defaults(func=cmd_head)

    p = sub.add_parser("render-mesh", help="shaded render of the head model at an expression and pose")
    p.add_argument("--expr", action="append", metavar="NAME=VALUE", help="expression coefficient, repeatable")
    p.add_argument("--pose", action="append", metavar="JOINT=RX,RY,RZ",
                   help="joint rotation in degrees (root, neck, jaw, left_eye, right_eye), repeatable")
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw in degrees (positive: from the head's left)")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch in degrees")
    p.add_argument("--distance", type=float, default=0.75, help="camera distance in metres")
    p.add_argument("-W", "--width", type=int, default=512)
    p.add_argument("-H", "--height", type=int, default=512)
    p.add_argument("--flame", metavar="DIR", help="render FLAME from this folder instead of the open model")
    p.add_argument("-o", "--output", required=True, help="output .png")
    p.set_defaults(func=cmd_render_mesh)
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


if __name__ == "__main__":
    sys.exit(main())

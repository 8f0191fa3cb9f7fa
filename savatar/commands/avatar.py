"""`savatar info` and `savatar export-ply`: inspect and convert avatar files."""
from __future__ import annotations

import argparse
from pathlib import Path

from savatar.cli_args import UserError, add_expr_pose_args, parse_expr, parse_pose
from savatar.commands.common import load_avatar_arg, make_rig


def cmd_info(args: argparse.Namespace) -> int:
    avatar = load_avatar_arg(args.avatar)
    meta = avatar.metadata
    rows = [("file", args.avatar or "(bundled default avatar)")]
    if args.avatar:
        rows.append(("file size", f"{Path(args.avatar).stat().st_size / 1e6:.2f} MB"))
    rows += [("gaussians", f"{len(avatar)}"), ("sh degree", f"{avatar.sh_degree}"), ("head model", avatar.head_model)]
    head = meta.get("head_data")
    if head is not None:
        rows += [("head faces", f"{len(head.faces)}"), ("head vertices", f"{len(head.v_template)}")]
    elif "num_faces" in meta:
        rows.append(("head faces", f"{meta['num_faces']}"))
    if "created" in meta:
        rows.append(("created", str(meta["created"])))
    if "thumbnails" in meta:
        rows.append(("portraits", f"{len(meta['thumbnails'])}"))
    if meta.get("sources"):
        rows.append(("sources", f"{len(meta['sources'])} portraits kept for refine --sources"))
    if "refinement" in meta:
        rows.append(("refinement", f"{meta['refinement'].get('iterations', 0)} iterations"))
    for name, m in meta.get("motions", {}).items():
        rows.append((f"motion {name}", f"{len(m['pose'])} frames at {m['fps']:g} fps"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_export_ply(args: argparse.Namespace) -> int:
    from savatar.core.io.ply import export_ply

    out = Path(args.output)
    if out.suffix.lower() != ".ply":
        raise UserError(f"{out}: the output must be a .ply file")
    rig = make_rig(load_avatar_arg(args.avatar), args.flame)
    expr = parse_expr(args.expr, rig.data.expr_names) + rig.avatar.default_expr.numpy()
    g = rig.world(expr, parse_pose(args.pose))
    out.parent.mkdir(parents=True, exist_ok=True)
    export_ply(g, out)
    print(f"wrote {out}: {len(g)} Gaussians (3DGS PLY, world space)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="describe an avatar file")
    p.add_argument("avatar", nargs="?", help="avatar .h5 (default: the bundled avatar)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export-ply", help="export an avatar at an expression and pose as a standard 3DGS .ply")
    p.add_argument("avatar", nargs="?", help="avatar .h5 (default: the bundled avatar)")
    add_expr_pose_args(p)
    p.add_argument("--flame", metavar="DIR", help="folder with your FLAME files (or set SAVATAR_FLAME_DIR)")
    p.add_argument("-o", "--output", required=True, help="output .ply")
    p.set_defaults(func=cmd_export_ply)

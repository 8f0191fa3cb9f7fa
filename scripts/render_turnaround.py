"""Regenerate the turnaround renders of docs/: avatars built from one portrait each, seen from the
front, at +-45 and +-90 degrees, from behind, and with the mouth open.

    .venv/bin/python scripts/render_turnaround.py PORTRAIT [PORTRAIT ...] -o docs/turnaround.png

With no portrait given, scikit-image's astronaut. Each row: the portrait, then the seven views
(CPU rasterizer, so no display is needed). Runs from any directory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

VIEWS = ((0, "front"), (-45, "-45"), (45, "+45"), (-90, "-90"), (90, "+90"), (180, "back"), (0, "mouth open"))
JAW_OPEN = 0.35  # radians of jaw rotation (pose[6]) for the mouth-open view
SIDE = 256


def _portrait_tile(image: np.ndarray) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = SIDE / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    tile = np.full((SIDE, SIDE, 3), 255, np.uint8)
    y, x = (SIDE - small.shape[0]) // 2, (SIDE - small.shape[1]) // 2
    tile[y:y + small.shape[0], x:x + small.shape[1]] = small
    return tile


def turnaround_row(image: np.ndarray) -> np.ndarray:
    """(SIDE, SIDE * (1 + len(VIEWS)), 3) uint8: the portrait and the avatar built from it."""
    import torch

    from savatar.core.build.build import build_avatar
    from savatar.core.gaussians.rig import Rig
    from savatar.core.io.pixels import to_uint8
    from savatar.core.render.api import render
    from savatar.core.render.camera import orbit_camera

    avatar, _ = build_avatar([image])
    rig = Rig.of(avatar)
    verts = rig.vertices().numpy()
    # The whole head framed, hair included: the centre of everything above the chin.
    face = rig.data.vertex_regions["face"]
    head = verts[verts[:, 1] > verts[face, 1].min()]
    target = 0.5 * (head.min(0) + head.max(0))
    tiles = [_portrait_tile(image)]
    for yaw, label in VIEWS:
        pose = np.zeros(15, np.float32)
        if label == "mouth open":
            pose[6] = JAW_OPEN
        cam = orbit_camera(yaw, 0, 0.62, tuple(target), SIDE, SIDE, 30.0)
        g = rig.world(pose=pose)
        out = render(g, torch.as_tensor(cam.viewmat, dtype=torch.float32), torch.as_tensor(cam.K, dtype=torch.float32),
                     SIDE, SIDE, torch.ones(3), backend="cpu")
        tiles.append(to_uint8(out.rgb.numpy()))
    return np.concatenate(tiles, 1)


def main(argv: list[str] | None = None) -> int:
    import skimage.data
    from PIL import Image

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("portraits", nargs="*", help="portrait images (default: scikit-image's astronaut)")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    args = p.parse_args(argv)
    images = [np.asarray(Image.open(f).convert("RGB")) for f in args.portraits] or [skimage.data.astronaut()]
    rows = []
    for i, image in enumerate(images):
        print(f"[{i + 1}/{len(images)}] building and rendering", file=sys.stderr, flush=True)
        rows.append(turnaround_row(image))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loading what several subcommands take: an avatar path (or the default) and a renderer."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from savatar.cli_args import UserError
from savatar.commands.progress import progress_bar
from savatar.core.gaussians.gaussians import GaussianAvatar, WorldGaussians
from savatar.core.render.camera import Camera


def load_avatar_arg(path: str | None) -> GaussianAvatar:
    """The avatar at path, or the bundled default one; file problems become UserError."""
    if path is None:
        from savatar.core.build.default_avatar import default_avatar
        return default_avatar()
    from savatar.core.io.avatar_file import AvatarFormatError, load_avatar
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    try:
        return load_avatar(path)
    except AvatarFormatError as exc:
        raise UserError(str(exc)) from None


def make_rig(avatar: GaussianAvatar, flame_dir: str | None = None):
    from savatar.core.gaussians.rig import Rig
    from savatar.core.head.flame import FlameFormatError
    try:
        return Rig.of(avatar, flame_dir)
    except (FlameFormatError, ValueError) as exc:
        raise UserError(str(exc)) from None


@dataclass
class FrameRenderer:
    """Renders WorldGaussians for a camera with one backend: draw_with_alpha gives the (H, W, 3)
    float image on the background and its (H, W) alpha, draw the image alone."""

    backend: str
    draw_with_alpha: Callable[[WorldGaussians, Camera], tuple[np.ndarray, np.ndarray]]

    def draw(self, g: WorldGaussians, camera: Camera) -> np.ndarray:
        return self.draw_with_alpha(g, camera)[0]


def frame_renderer(backend: str, background: tuple[float, float, float]) -> FrameRenderer:
    """'gl' draws with OpenGL (headless EGL); 'auto', 'cpu' and 'gsplat' go through core.render."""
    if backend == "gl":
        from savatar.gl.context import GLUnavailableError
        from savatar.gl.splat_renderer import SplatRenderer
        try:
            splat = SplatRenderer()
        except GLUnavailableError as exc:
            raise UserError(str(exc)) from None

        def draw_gl(g: WorldGaussians, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
            image = splat.render(g, cam, background)
            return image.rgb, image.alpha[..., 0]

        return FrameRenderer("gl", draw_gl)
    from savatar.core.render.api import render, resolve_backend
    try:
        resolved = resolve_backend(backend)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    bg = torch.tensor(background, dtype=torch.float32)

    def draw(g: WorldGaussians, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = render(g, torch.tensor(cam.viewmat, dtype=torch.float32), torch.tensor(cam.K, dtype=torch.float32),
                         cam.width, cam.height, bg, backend=resolved)
        return out.rgb.cpu().numpy(), out.alpha[..., 0].cpu().numpy()

    return FrameRenderer(resolved, draw)


def parse_color(text: str) -> tuple[float, float, float]:
    """'R,G,B' in [0, 1] (or 0..255 when any part is above 1)."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0:
        raise UserError(f"colour {text!r}: expected R,G,B")
    if max(parts) > 1:
        parts = [p / 255 for p in parts]
    return tuple(min(p, 1.0) for p in parts)


@contextmanager
def tracking_bar(desc: str = "track") -> Iterator[Callable[[int, int], None]]:
    """A progress bar for frame-by-frame work; yields progress(done, total), total 0 if unknown."""
    bar = progress_bar(desc=desc, unit="frame")

    def progress(done: int, total: int) -> None:
        bar.total = total or None
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()

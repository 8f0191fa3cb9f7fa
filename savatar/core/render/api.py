"""One entry point for rendering WorldGaussians, whatever the machine: the pure-PyTorch CPU
rasterizer everywhere, gsplat's CUDA rasterizer when a GPU is present. Both follow the image
formation of docs/conventions.md; "gl" (the viewer's OpenGL splatting) is drawn by the viewer itself."""
from __future__ import annotations

import torch

from savatar.core.gaussians.gaussians import WorldGaussians
from savatar.core.render.output import RenderOutput
from savatar.core.render.rasterize_cpu import rasterize_cpu
from savatar.core.render.rasterize_gsplat import rasterize_gsplat

# "gl" is a valid backend name for the viewer, which draws it with its own OpenGL path;
# render() below cannot produce it.
KNOWN_BACKENDS = ("auto", "cpu", "gsplat", "gl")


def available_backends() -> list[str]:
    """Backends render() can run on this machine."""
    return ["cpu", "gsplat"] if torch.cuda.is_available() else ["cpu"]


def resolve_backend(name: str) -> str:
    """Concrete backend for a requested name: "auto" -> "gsplat" with CUDA, else "cpu".

    Raises ValueError for unknown names and RuntimeError for "gsplat" without CUDA.
    """
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"unknown render backend {name!r}; known: {', '.join(KNOWN_BACKENDS)}")
    if name == "auto":
        return "gsplat" if torch.cuda.is_available() else "cpu"
    if name == "gsplat" and not torch.cuda.is_available():
        raise RuntimeError("render backend 'gsplat' needs a CUDA GPU and none is available; "
                           "use 'cpu' or 'auto'")
    return name


def render(g: WorldGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
           background: torch.Tensor, backend: str = "auto", sh_degree: int | None = None,
           rasterize_mode: str = "classic") -> RenderOutput:
    """Render g seen by an OpenCV camera.

    viewmat: (4, 4) world-to-camera; K: (3, 3) intrinsics in pixels; background: (3,) RGB.
    sh_degree: SH bands to use (default: all that g holds).
    """
    resolved = resolve_backend(backend)
    if resolved == "cpu":
        return rasterize_cpu(g, viewmat, K, width, height, background, sh_degree=sh_degree,
                             rasterize_mode=rasterize_mode)
    if resolved == "gsplat":
        return rasterize_gsplat(g, viewmat, K, width, height, background, sh_degree=sh_degree,
                                rasterize_mode=rasterize_mode)
    raise ValueError(f"backend {resolved!r} is drawn by the viewer's OpenGL path, not by render()")

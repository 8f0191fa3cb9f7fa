"""gsplat's CUDA rasterizer behind the RenderOutput interface.

gsplat is imported inside the function: on a machine without CUDA any call into its CUDA
wrapper tries to JIT-build the extension (docs/conventions.md), so nothing here touches gsplat until a
GPU is known to be present.
"""
from __future__ import annotations

import torch

from savatar.core.gaussians.gaussians import WorldGaussians
from savatar.core.render.output import RenderOutput


def rasterize_gsplat(g: WorldGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                     height: int, background: torch.Tensor, sh_degree: int | None = None,
                     rasterize_mode: str = "classic") -> RenderOutput:
    """Render with gsplat.rasterization on the GPU.

    viewmat: (4, 4) world-to-camera; K: (3, 3); background: (3,). Inputs on the CPU are moved
    to the current CUDA device (differentiably); the outputs stay there.
    Returns rgb (H, W, 3), alpha (H, W, 1) and expected depth (H, W, 1) ("RGB+ED").
    """
    if not torch.cuda.is_available():
        raise RuntimeError("rasterize_gsplat needs a CUDA GPU (torch.cuda.is_available() is False); "
                           "use the 'cpu' backend instead")
    from gsplat import rasterization

    device = g.means.device if g.means.is_cuda else torch.device("cuda")
    degree = g.sh_degree if sh_degree is None else sh_degree
    colors, alphas, _ = rasterization(
        means=g.means.to(device),
        quats=g.quats.to(device),
        scales=g.scales.to(device),
        opacities=g.opacities.to(device),
        colors=g.sh.to(device),
        viewmats=viewmat.to(device, g.means.dtype)[None],
        Ks=K.to(device, g.means.dtype)[None],
        width=width,
        height=height,
        sh_degree=degree,
        backgrounds=background.to(device, g.means.dtype)[None],
        render_mode="RGB+ED",
        packed=False,
        rasterize_mode=rasterize_mode,
    )
    return RenderOutput(rgb=colors[0, ..., :3], alpha=alphas[0], depth=colors[0, ..., 3:4])

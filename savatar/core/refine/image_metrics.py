"""Image comparison: SSIM (a refinement loss term) and PSNR, over the whole image or inside a mask.

Held-out scores are taken inside the frame's head mask: real frames keep their real background,
which the avatar never draws, so a whole-image PSNR would mostly measure the background.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


_WINDOW = _gaussian_window()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two (H, W, C) images in [0, 1] (Gaussian window 11, sigma 1.5, zero padded
    like the 3DGS reference); differentiable."""
    c = a.shape[-1]
    x = a.permute(2, 0, 1)[None]
    y = b.permute(2, 0, 1)[None]
    w = _WINDOW.to(a).expand(c, 1, -1, -1)
    pad = w.shape[-1] // 2
    blur = lambda t: F.conv2d(t, w, padding=pad, groups=c)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return m.mean()


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray,
         mask: torch.Tensor | np.ndarray | None = None) -> float:
    """PSNR in dB of images a, b: (H, W, C) in [0, 1], over the pixels where mask (H, W) or
    (H, W, 1) is above 0.5, or over the whole image without a mask. An empty mask gives NaN
    (there is nothing to compare), never a score."""
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    err = ((a - b) ** 2).to(torch.float64)
    if mask is not None:
        inside = torch.as_tensor(mask).detach().to(err.device).reshape(err.shape[:2]) > 0.5
        if not bool(inside.any()):
            return float("nan")
        err = err[inside]
    mse = float(err.mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))

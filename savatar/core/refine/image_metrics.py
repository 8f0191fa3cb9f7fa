"""Image comparison: SSIM (a refinement loss term) and PSNR, over the whole image or inside a mask.

Held-out scores are taken inside the frame's head mask: real frames keep their real background,
which the avatar never draws, so a whole-image PSNR would mostly measure the background.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size,) normalized 1D Gaussian; the 2D SSIM window is its outer product with itself."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


_TAPS = _gaussian_taps()
_WINDOW = _TAPS[:, None] * _TAPS[None, :]

try:
    import numba
except ImportError:  # the PyTorch convolution below does the same, slower
    numba = None

if numba is not None:
    @numba.njit(nogil=True, cache=True)
    def _blur_kernel(src, dst, taps):
        """Separable zero-padded blur of each map of src (N, H, W) into dst (N, H, W); inner
        loops run along contiguous rows so they vectorize."""
        n, h, w = src.shape
        r = taps.shape[0] // 2
        tmp = np.empty((h, w), src.dtype)
        for i in range(n):
            tmp[:] = 0.0
            for y in range(h):
                for k in range(taps.shape[0]):
                    shift = k - r
                    lo, hi = max(0, -shift), min(w, w - shift)
                    t = taps[k]
                    for x in range(lo, hi):
                        tmp[y, x] += t * src[i, y, x + shift]
            dst[i] = 0.0
            for y in range(h):
                for k in range(taps.shape[0]):
                    yy = y + k - r
                    if 0 <= yy < h:
                        t = taps[k]
                        for x in range(w):
                            dst[i, y, x] += t * tmp[yy, x]


class _Blur(torch.autograd.Function):
    """The SSIM window as a linear map on (N, H, W). With zero padding and a symmetric kernel
    the map is a symmetric matrix, so its backward is the same blur."""

    @staticmethod
    def forward(ctx, maps):
        return _blur_numba(maps)

    @staticmethod
    def backward(ctx, grad):
        return _blur_numba(grad)


def _blur_numba(maps: torch.Tensor) -> torch.Tensor:
    src = maps.detach().contiguous()
    out = torch.empty_like(src)
    _blur_kernel(src.numpy(), out.numpy(), _TAPS.to(src.dtype).numpy())
    return out


def _blur(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, H, W): each map blurred by the SSIM window, zero padded."""
    if numba is not None and maps.device.type == "cpu":
        return _Blur.apply(maps)
    w = _WINDOW.to(maps)[None, None].expand(maps.shape[0], 1, -1, -1)
    return F.conv2d(maps[None], w, padding=w.shape[-1] // 2, groups=maps.shape[0])[0]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two (H, W, C) images in [0, 1] (Gaussian window 11, sigma 1.5, zero padded
    like the 3DGS reference); differentiable."""
    c = a.shape[-1]
    x = a.permute(2, 0, 1)
    y = b.permute(2, 0, 1)
    # One blur call for the five maps: mean x, mean y, E[x^2], E[y^2], E[xy].
    mx, my, exx, eyy, exy = _blur(torch.cat([x, y, x * x, y * y, x * y])).split(c)
    sxx = exx - mx * mx
    syy = eyy - my * my
    sxy = exy - mx * my
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

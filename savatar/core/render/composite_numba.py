"""Compiled front-to-back compositing of binned 2D Gaussians, forward and backward (numba).

The same image formation as rasterize_cpu's PyTorch compositing (docs/conventions.md), one
pixel at a time as gsplat's CUDA kernels do it: per pixel, walk its tile's list nearest first;
s = cut - 0.5 d^T conic d (d = pixel centre - mean) is positive exactly inside the support,
alpha = min(ALPHA_MAX, scale exp(s)) with scale = opacity exp(-cut); a pixel stops before the
Gaussian that would take its transmittance to T_MIN or below.

Why compiled: the PyTorch version spends its time in some thirty full passes over every
(pixel, Gaussian) pair of a tile (bmm, exp, cumprod, masks, ...), memory-bound; here each pair
is one pass of scalar arithmetic, exp only inside the support, and a pixel stops reading its
list when it stops. Arithmetic is in float64 whatever the storage type.

Tiles are split between threads (each thread owns whole tiles, so the per-intersection
gradient rows it writes are its own: no atomics); the kernels release the GIL.
"""
from __future__ import annotations

import math

import numba
import numpy as np

# Imported from here by rasterize_cpu too; repeated as plain floats so the kernels see constants.
ALPHA_MAX = 0.999
T_MIN = 1e-4


@numba.njit(nogil=True, cache=True, inline="always")
def _tile_box(t, tiles_x, tile_size, width, height):
    """Pixel ranges [x0, x1) and [y0, y1) of tile t, clipped to the image."""
    x0, y0 = (t % tiles_x) * tile_size, (t // tiles_x) * tile_size
    return x0, min(x0 + tile_size, width), y0, min(y0 + tile_size, height)


@numba.njit(nogil=True, cache=True, inline="always")
def _alpha_at(geo, g, x, y):
    """(alpha, dx, dy) of Gaussian g at the pixel centre (x, y), d = pixel - mean; alpha is
    -1 outside the support (s <= 0)."""
    dx = x - geo[g, 0]
    dy = y - geo[g, 1]
    s = geo[g, 5] - (0.5 * (geo[g, 2] * dx * dx + geo[g, 4] * dy * dy) + geo[g, 3] * dx * dy)
    if s <= 0.0:
        return -1.0, dx, dy
    return min(geo[g, 6] * math.exp(s), ALPHA_MAX), dx, dy



@numba.njit(nogil=True, cache=True)
def forward_tiles(tiles, offsets, gauss_ids, geo, feat, tile_size, tiles_x, width, height,
                  out, out_alpha):
    """Composite the pixels of `tiles` (int64 (K,)) into out (H, W, C) and out_alpha (H, W).

    offsets (T + 1,) and gauss_ids (M,) as TileBins; geo (N, 7) per Gaussian: mean x, mean y,
    conic a, b, c, cut, scale; feat (N, C). out and out_alpha hold sum(f_i a_i T_i) and
    sum(a_i T_i) (no background).
    """
    channels = feat.shape[1]
    acc = np.empty(channels, np.float64)
    for ti in range(tiles.shape[0]):
        t = tiles[ti]
        start, end = offsets[t], offsets[t + 1]
        x0, x1, y0, y1 = _tile_box(t, tiles_x, tile_size, width, height)
        for py in range(y0, y1):
            for px in range(x0, x1):
                trans = 1.0
                wsum = 0.0
                acc[:] = 0.0
                for k in range(start, end):
                    g = gauss_ids[k]
                    alpha, _, _ = _alpha_at(geo, g, px + 0.5, py + 0.5)
                    if alpha < 0.0:
                        continue
                    nxt = trans * (1.0 - alpha)
                    if nxt <= T_MIN:
                        break
                    w = alpha * trans
                    for c in range(channels):
                        acc[c] += w * feat[g, c]
                    wsum += w
                    trans = nxt
                for c in range(channels):
                    out[py, px, c] = acc[c]
                out_alpha[py, px] = wsum


@numba.njit(nogil=True, cache=True)
def backward_tiles(tiles, offsets, gauss_ids, geo, feat, tile_size, tiles_x, width, height,
                   grad, grad_alpha, total, g_feat, g_geo):
    """Gradients of the pixels of `tiles`, per intersection row k of gauss_ids.

    grad (H, W, C) and grad_alpha (H, W): dL/d image and dL/d alpha; total (H, W): sum over
    channels of grad times the final pixel (background included) plus grad_alpha times alpha,
    which gives each Gaussian what lies behind it in one front-to-back walk. Writes g_feat
    (M, C) dL/d features and g_geo (M, 6) dL/d (mean x, mean y, conic a, b, c, log opacity);
    rows of Gaussians that never contributed stay as they were (zero).
    """
    channels = feat.shape[1]
    for ti in range(tiles.shape[0]):
        t = tiles[ti]
        start, end = offsets[t], offsets[t + 1]
        x0, x1, y0, y1 = _tile_box(t, tiles_x, tile_size, width, height)
        for py in range(y0, y1):
            for px in range(x0, x1):
                trans = 1.0
                seen = 0.0
                ga = grad_alpha[py, px]
                tot = total[py, px]
                for k in range(start, end):
                    g = gauss_ids[k]
                    alpha, dx, dy = _alpha_at(geo, g, px + 0.5, py + 0.5)
                    if alpha < 0.0:
                        continue
                    a, b, c = geo[g, 2], geo[g, 3], geo[g, 4]
                    one_minus = 1.0 - alpha
                    nxt = trans * one_minus
                    if nxt <= T_MIN:
                        break
                    w = alpha * trans
                    q = ga
                    for ch in range(channels):
                        gc = grad[py, px, ch]
                        q += gc * feat[g, ch]
                        g_feat[k, ch] += w * gc
                    seen += w * q
                    if alpha < ALPHA_MAX:
                        # dL/dalpha = T q - (what lies behind) / (1 - alpha); dalpha/ds = alpha.
                        g_s = (trans * q - (tot - seen) / one_minus) * alpha
                        # s = cut - 0.5 d^T C d with d = p - m: ds/dm = C d.
                        g_geo[k, 0] += g_s * (a * dx + b * dy)
                        g_geo[k, 1] += g_s * (b * dx + c * dy)
                        g_geo[k, 2] -= 0.5 * g_s * dx * dx
                        g_geo[k, 3] -= g_s * dx * dy
                        g_geo[k, 4] -= 0.5 * g_s * dy * dy
                        g_geo[k, 5] += g_s
                    trans = nxt

"""Differentiable pure-PyTorch 3DGS rasterizer for machines without a GPU.

Implements the image formation of docs/conventions.md in three exposed steps:
1. project_gaussians: EWA projection to 2D means, covariances, conics, depths, radii;
2. intersect_tiles: which Gaussians touch which tile (TILE_SIZE square), front to back (vectorized);
3. rasterize_to_pixels: per-tile compositing with a hand-written backward pass, in compiled
   kernels (composite_numba, the default where numba is installed) or in PyTorch (the
   reference below, also the fallback).

Support of a Gaussian, as gsplat 1.5.3's CUDA kernels do it (docs/conventions.md). The projection gives
each Gaussian an opacity-aware extent e = min(3.33, sqrt(2 ln(255 opacity))) standard deviations
and a per-axis box radius ceil(e sqrt(Sigma2D[axis, axis])); opacity < 1/255 is culled. A pixel
of a tile the box touches takes alpha = min(0.999, opacity exp(-0.5 d^T Sigma2D^-1 d)) unless
alpha < 1/255. For opacity <= 1, alpha >= 1/255 is exactly the ellipse of Mahalanobis radius e
(sqrt(2 ln 255) < 3.33), whose bounding box is that radius: the support is the ellipse and the
tiles never cut it. Here a Gaussian contributes exactly inside that ellipse (also for opacities
above 255 exp(-3.33^2 / 2) ~ 1.0034, where gsplat's support would depend on where tile borders
fall), and tiles are chosen to cover exactly the support, which makes the image independent of
the tiling.

Compositing runs front to back over batches of tiles with similar Gaussian counts, in chunks
of Gaussians; a tile leaves its batch once all its pixels have stopped (transmittance would
fall to 1e-4). The backward pass is written by hand and recomputes each chunk instead of
storing per pixel-Gaussian state, so memory is bounded by the chunk size, not by the number of
pixel-Gaussian pairs. Expected depth is normalized by alpha, like gsplat's "ED" mode.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch

from savatar.core.gaussians.gaussians import WorldGaussians
from savatar.core.gaussians.sh import camera_center, sh_to_rgb
from savatar.core.render.output import RenderOutput

EPS2D = 0.3
NEAR_PLANE = 0.01
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
# Largest extent in standard deviations (gsplat's ProjectionEWA3DGSFused.cu).
EXTENT_MAX = 3.33
# 8 measured about a fifth faster than 16 at 256x256 with 30K head Gaussians (forward and
# backward, one thread): smaller tiles stop sooner and carry fewer Gaussians that miss them.
TILE_SIZE = 8
# Pixel-Gaussian pairs per compositing chunk: a few MB per temporary, and enough work per
# tensor op that Python overhead stays small.
CHUNK_PAIRS = 1 << 19
CHUNK_GAUSSIANS = 32


@dataclass
class Projection:
    """Per-Gaussian screen-space quantities (N Gaussians).

    means2d: (N, 2) pixels; covars2d: (N, 2, 2) dilated by eps2d; conics: (N, 3) upper triangle
    (a, b, c) of covars2d^-1; depths: (N,) camera-space z; opacities: (N,) opacity times the
    antialiasing compensation (plain opacity in "classic" mode); compensations: (N,) or None;
    radii: (N,) int32 extent ceil(3 sqrt(largest eigenvalue)), 0 for culled Gaussians;
    valid: (N,) bool, in front of the near plane and overlapping the image.
    """

    means2d: torch.Tensor
    covars2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    opacities: torch.Tensor
    compensations: torch.Tensor | None
    radii: torch.Tensor
    valid: torch.Tensor


@dataclass
class TileBins:
    """Gaussian lists per tile, front to back.

    gauss_ids: (M,) int64, grouped by tile in row-major tile order; tile_ids: (M,) int64, the
    tile of each entry; offsets: (T + 1,) int64, tile t owns gauss_ids[offsets[t]:offsets[t + 1]];
    T = tiles_x * tiles_y.
    """

    tile_size: int
    tiles_x: int
    tiles_y: int
    gauss_ids: torch.Tensor
    tile_ids: torch.Tensor
    offsets: torch.Tensor


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz, any norm -> (N, 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T. quats (N, 4) wxyz, scales (N, 3) linear -> (N, 3, 3)."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(1, 2)


def project_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
                      opacities: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor,
                      width: int, height: int, eps2d: float = EPS2D,
                      near_plane: float = NEAR_PLANE,
                      rasterize_mode: str = "classic") -> Projection:
    """EWA projection of world Gaussians through an OpenCV pinhole camera (skew ignored).

    means (N, 3), quats (N, 4), scales (N, 3), opacities (N,); viewmat (4, 4) world-to-camera;
    K (3, 3). Matches gsplat's _fully_fused_projection for means2d, covariances, conics, depths
    and compensations; radii and culling follow gsplat's CUDA projection, which, unlike its
    PyTorch reference, shrinks the extent with the opacity (see Projection).
    """
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(
            f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
    rot, t = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ rot.T + t
    covars_c = rot @ covariance_3d(quats, scales) @ rot.T
    tx, ty, tz = means_c.unbind(-1)
    in_front = tz >= near_plane
    # Culled Gaussians still go through the arithmetic; a safe depth keeps their values and
    # gradients finite (a 0 * inf in backward would poison every gradient).
    tz = torch.where(in_front, tz, torch.ones_like(tz))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # As in 3DGS and gsplat, the Jacobian is evaluated with the direction clamped to 1.3x the
    # field of view, which keeps off-screen Gaussians from blowing up.
    half_tan_x, half_tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * half_tan_x, cx / fx + 0.3 * half_tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * half_tan_y, cy / fy + 0.3 * half_tan_y
    u = torch.minimum(torch.maximum(tx / tz, -lim_xn), lim_xp)
    v = torch.minimum(torch.maximum(ty / tz, -lim_yn), lim_yp)
    zeros = torch.zeros_like(tz)
    jac = torch.stack([fx / tz, zeros, -fx * u / tz, zeros, fy / tz, -fy * v / tz],
                      dim=-1).reshape(-1, 2, 3)
    cov2d = jac @ covars_c @ jac.transpose(1, 2)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], dim=-1)

    det_orig = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    det = (cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]).clamp_min(1e-10)
    conics = torch.stack([cov2d[:, 1, 1] / det, -0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0]) / det,
                          cov2d[:, 0, 0] / det], dim=-1)
    compensations = None
    if rasterize_mode == "antialiased":
        # Floor above 0: sqrt has an infinite slope at 0.
        compensations = torch.sqrt((det_orig / det).clamp_min(1e-12))
        opacities = opacities * compensations

    with torch.no_grad():
        cut = support_cutoff(opacities)
        extent = torch.sqrt(2.0 * cut.clamp_min(0.0))
        radius = torch.ceil(extent[:, None] * torch.sqrt(torch.diagonal(cov2d, dim1=1, dim2=2)))
        (mx, my), (rx, ry) = means2d.unbind(-1), radius.unbind(-1)
        on_screen = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        # cut <= 0: opacity <= 1/255, where gsplat's radii are 0 (culled).
        valid = in_front & (cut > 0) & on_screen & torch.isfinite(radius).all(dim=1)
        radii = torch.where(valid[:, None], radius, torch.zeros_like(radius)).to(torch.int32)
    return Projection(means2d=means2d, covars2d=cov2d, conics=conics, depths=means_c[:, 2],
                      opacities=opacities, compensations=compensations, radii=radii, valid=valid)


def support_cutoff(opacities: torch.Tensor) -> torch.Tensor:
    """Largest 0.5 d^T Sigma^-1 d (N,) at which a Gaussian of these opacities (N,) still
    contributes: alpha >= 1/255, within EXTENT_MAX standard deviations. The opacity-aware extent
    is e = sqrt(2 cut). Not positive: never contributes."""
    with torch.no_grad():
        cut = torch.log(opacities.clamp_min(1e-30) / ALPHA_MIN)
        return torch.clamp_max(cut, 0.5 * EXTENT_MAX ** 2)


@torch.no_grad()
def _pixel_boxes(proj: Projection, cut: torch.Tensor, ids: torch.Tensor, width: int,
                 height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last pixel (x, y) whose centre lies in the bounding box of the support of the
    Gaussians ids (K,), clipped to the image: lo, hi (K, 2) float; lo > hi on an axis where the
    box holds no pixel centre. cut: support_cutoff of all N opacities."""
    m = proj.means2d.detach().index_select(0, ids)
    reach = torch.sqrt(2.0 * cut.index_select(0, ids))
    diag = torch.diagonal(proj.covars2d.detach(), dim1=1, dim2=2).index_select(0, ids)
    half = reach[:, None] * torch.sqrt(diag)
    size = torch.tensor([width, height], dtype=m.dtype, device=m.device)
    lo = torch.ceil(m - half - 0.5).clamp(min=0).minimum(size)
    hi = torch.floor(m + half - 0.5).minimum(size - 1).clamp(min=-1)
    return lo, hi


@torch.no_grad()
def support_window(proj: Projection, width: int, height: int,
                   margin: int = 0) -> tuple[int, int, int, int]:
    """The pixel window (x0, y0, x1, y1), x1 and y1 exclusive, that holds every pixel any valid
    Gaussian of proj draws, widened by margin pixels on each side and clipped to the image.
    Outside it the image is background. At least one pixel, also when nothing is visible."""
    ids = torch.nonzero(proj.valid).squeeze(1)
    lo, hi = _pixel_boxes(proj, support_cutoff(proj.opacities), ids, width, height)
    hit = (lo <= hi).all(dim=1)
    if not bool(hit.any()):
        return 0, 0, min(1, width), min(1, height)
    (x0, y0), (x1, y1) = lo[hit].amin(0).tolist(), (hi[hit].amax(0) + 1).tolist()
    return (max(0, int(x0) - margin), max(0, int(y0) - margin),
            min(width, int(x1) + margin), min(height, int(y1) + margin))


@torch.no_grad()
def intersect_tiles(proj: Projection, width: int, height: int,
                    tile_size: int = TILE_SIZE) -> TileBins:
    """Bin the valid Gaussians of proj into the tiles that hold pixel centres of their support.

    The support (see support_cutoff) is an ellipse; its axis-aligned bounding box gives the
    first and last pixel centre per axis (pixel (x, y) has its centre at (x + 0.5, y + 0.5)).
    Each tile's list is sorted by camera-space depth of the centres, nearest first.
    """
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    device = proj.means2d.device
    cut = support_cutoff(proj.opacities)
    ids = torch.nonzero(proj.valid).squeeze(1)
    # index_select rather than x[idx] throughout: several times faster on CPU.
    ids = ids.index_select(0, torch.argsort(proj.depths.index_select(0, ids), stable=True))
    lo, hi = _pixel_boxes(proj, cut, ids, width, height)
    hit = torch.nonzero((lo <= hi).all(dim=1)).squeeze(1)
    ids = ids.index_select(0, hit)
    lo = torch.div(lo.index_select(0, hit).long(), tile_size, rounding_mode="floor")
    hi = torch.div(hi.index_select(0, hit).long(), tile_size, rounding_mode="floor")
    span = hi - lo + 1
    counts = span[:, 0] * span[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(ids), device=device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(owner), device=device) - first.index_select(0, owner)
    span_x = span[:, 0].index_select(0, owner)
    row = torch.div(local, span_x, rounding_mode="floor")
    corner = (lo[:, 1] * tiles_x + lo[:, 0]).index_select(0, owner)
    tile = corner + row * tiles_x + (local - row * span_x)
    # A stable sort by tile keeps the depth order established above inside every tile; it is
    # much faster on the narrowest integer type that holds the tile ids.
    key_dtype = torch.int16 if tiles_x * tiles_y <= torch.iinfo(torch.int16).max else torch.int32
    tile, order = torch.sort(tile.to(key_dtype), stable=True)
    tile = tile.long()
    per_tile = torch.bincount(tile, minlength=tiles_x * tiles_y)
    offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(per_tile, 0)
    return TileBins(tile_size=tile_size, tiles_x=tiles_x, tiles_y=tiles_y,
                    gauss_ids=ids.index_select(0, owner.index_select(0, order)), tile_ids=tile,
                    offsets=offsets)


def _tile_batches(bins: TileBins) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Group non-empty tiles, most crowded first, so that tiles batched together have similar
    Gaussian counts (little padding).

    Returns (tiles (B,), rows (B, G)) pairs: rows index the intersection arrays of
    _Intersections, front to back per tile, padded with the padding row M.
    """
    counts = bins.offsets[1:] - bins.offsets[:-1]
    order = torch.argsort(counts, descending=True, stable=True)
    order = order[counts[order] > 0]
    per_batch = max(1, CHUNK_PAIRS // (bins.tile_size * bins.tile_size * CHUNK_GAUSSIANS))
    padding_row = len(bins.gauss_ids)
    batches = []
    for start in range(0, len(order), per_batch):
        tiles = order[start:start + per_batch]
        slot = torch.arange(int(counts[tiles[0]]), device=tiles.device)
        rows = bins.offsets[tiles][:, None] + slot
        rows = torch.where(slot < counts[tiles][:, None], rows, torch.full_like(rows, padding_row))
        batches.append((tiles, rows))
    return batches


def _pixel_basis(tile_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(P, 6) quadratic monomials [1, x, y, x^2, xy, y^2] of the pixel centres of a tile, pixel
    p = y * tile_size + x, in coordinates centred on the tile (which keeps the expanded form
    well conditioned)."""
    pix = torch.arange(tile_size * tile_size, device=device)
    px = (pix % tile_size).to(dtype) + 0.5 - 0.5 * tile_size
    py = (pix // tile_size).to(dtype) + 0.5 - 0.5 * tile_size
    return torch.stack([torch.ones_like(px), px, py, px * px, px * py, py * py], dim=1)


# exp() is several times slower on arguments that underflow; s only matters where it is >= 0,
# so it is clamped to a floor whose exp is a normal float.
_S_FLOOR = -20.0
_threshold = torch.nn.functional.threshold


class _Intersections:
    """Per (tile, Gaussian) intersection, M rows plus a padding row M, packed in one table so a
    chunk needs a single gather.

    Over a tile's pixel basis, s = cut - 0.5 d^T conic d is non-negative exactly inside the
    support and alpha = scale * exp(s) with scale = opacity * exp(-cut). Columns: 0-5 the
    coefficients of s, 6 the scale, 7.. the features and a constant 1 (its composite is alpha).
    local: (mx, my, a, b, c), each (M,), the means in the tile's centred frame and the conics.
    """

    def __init__(self, means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                 features: torch.Tensor, bins: TileBins):
        ts = bins.tile_size
        tiles = torch.arange(bins.tiles_x * bins.tiles_y, device=means2d.device)
        corners = torch.stack([tiles % bins.tiles_x, tiles // bins.tiles_x], 1).to(means2d.dtype)
        centre = (corners * ts + 0.5 * ts).index_select(0, bins.tile_ids)
        cut = support_cutoff(opacities)
        scale = opacities * torch.exp(-cut)
        per_gaussian = torch.cat([means2d, conics, cut[:, None], scale[:, None], features,
                                  torch.ones_like(cut)[:, None]], dim=1)
        x = per_gaussian.index_select(0, bins.gauss_ids)
        mx, my = x[:, 0] - centre[:, 0], x[:, 1] - centre[:, 1]
        a, b, c, cut = x[:, 2], x[:, 3], x[:, 4], x[:, 5]
        kx, ky = a * mx + b * my, b * mx + c * my
        m = x.shape[0]
        table = x.new_empty(m + 1, x.shape[1])
        table[:m, :6] = torch.stack([cut - 0.5 * (kx * mx + ky * my), kx, ky,
                                     -0.5 * a, -b, -0.5 * c], dim=1)
        table[:m, 6:] = x[:, 6:]
        # The padding row has s < 0 everywhere, so it is outside every support.
        table[m] = 0.0
        table[m, 0] = _S_FLOOR
        self.table = table
        self.local = (mx, my, a, b, c)

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """rows (B, G) -> coefficients (B, G, 6), scales (B, G), features (B, G, C + 1)."""
        t = self.table.index_select(0, rows.reshape(-1)).view(rows.shape + (-1,))
        return t[..., :6], t[..., 6], t[..., 7:]


class _Chunk:
    """Alphas and transmittances of one chunk of Gaussians over a batch of tiles.

    basis (B, P, 6) (expanded); coef (B, G, 6); scale (B, G); trans (B, P, 1) transmittance
    before the chunk (0 for pixels that have stopped). Attributes, all (B, P, G) unless noted:
    alpha (0 outside the support, at most ALPHA_MAX), one_minus (1 - alpha), t_before
    (transmittance before each Gaussian), drawn_after (transmittance after each Gaussian if it
    was composited, else 0), weight (alpha * t_before if composited, else 0), trans_out
    (B, P, 1) for the next chunk.

    Boolean masks are avoided on purpose: on CPU, comparisons and masked_fill cost several
    times more than threshold() and arithmetic.
    """

    def __init__(self, basis: torch.Tensor, coef: torch.Tensor, scale: torch.Tensor,
                 trans: torch.Tensor):
        b, g = scale.shape
        s = torch.bmm(basis, coef.transpose(1, 2)).clamp_min_(_S_FLOOR)
        # exp(s) > 1 exactly inside the support; _threshold() zeroes everything else.
        alpha = _threshold(s.exp_(), 1.0, 0.0, inplace=True)
        self.alpha = alpha.mul_(scale[:, None, :]).clamp_max_(ALPHA_MAX)
        # One cumulative product over [T_in, 1 - a_1, ..., 1 - a_G] gives T before and after.
        t = torch.empty(b, basis.shape[1], g + 1, dtype=s.dtype, device=s.device)
        t[..., :1] = trans
        self.one_minus = torch.sub(torch.ones((), dtype=s.dtype), self.alpha, out=t[..., 1:])
        t = torch.cumprod(t, dim=-1)
        self.t_before = t[..., :-1]
        # Transmittance only decreases, so the composited Gaussians are a prefix: the first
        # one that would take T to T_MIN or below ends the pixel, exclusively (3DGS, gsplat).
        self.drawn_after = _threshold(t[..., 1:], T_MIN, 0.0)
        # alpha * T_before = alpha / (1 - alpha) * T_after, which is 0 once the pixel stopped.
        self.weight = (self.alpha / self.one_minus).mul_(self.drawn_after)
        self.trans_out = self.drawn_after[..., -1:]


def _sweep(bins: TileBins, isect: _Intersections, basis: torch.Tensor,
           state: dict[str, torch.Tensor],
           finished: Callable[[torch.Tensor, dict[str, torch.Tensor]], None] | None = None):
    """Front-to-back walk over batches of tiles in chunks of Gaussians.

    state maps names to per-tile tensors (T, ...); the walk slices them per batch and yields
    (chunk, rows (B, G), features (B, G, C + 1), batch) where batch holds the batch's slices
    plus "trans" (B, P, 1); the consumer may replace its entries. Tiles whose pixels have all
    stopped leave the batch; finished(tiles, batch) sees them before they go.
    """
    pixels = basis.shape[0]
    for tiles, rows in _tile_batches(bins):
        batch = {name: value.index_select(0, tiles) for name, value in state.items()}
        batch["trans"] = basis.new_ones(len(tiles), pixels, 1)
        basis_b = basis.expand(len(tiles), -1, -1)
        for g0 in range(0, rows.shape[1], CHUNK_GAUSSIANS):
            chunk_rows = rows[:, g0:g0 + CHUNK_GAUSSIANS]
            coef, scale, feat = isect.gather(chunk_rows)
            chunk = _Chunk(basis_b, coef, scale, batch["trans"])
            yield chunk, chunk_rows, feat, batch
            batch["trans"] = chunk.trans_out
            alive = batch["trans"].amax(dim=1).squeeze(1) > 0.0
            if not bool(alive.all()):
                if finished is not None:
                    finished(tiles[~alive], {k: v[~alive] for k, v in batch.items()})
                tiles, rows = tiles[alive], rows[alive]
                batch = {k: v[alive] for k, v in batch.items()}
                basis_b = basis.expand(len(tiles), -1, -1)
                if len(tiles) == 0:
                    break
        if finished is not None and len(tiles):
            finished(tiles, batch)


class _RasterizeToPixels(torch.autograd.Function):
    """Images are handled tile by tile as (T, C, P) (channels before pixels): the matrix
    products with few channels are several times faster in that orientation."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, bins, background, width, height):
        isect = _Intersections(means2d, conics, opacities, features, bins)
        basis = _pixel_basis(bins.tile_size, means2d.dtype, means2d.device)
        channels = isect.table.shape[1] - 7
        out = means2d.new_zeros(bins.tiles_x * bins.tiles_y, channels, basis.shape[0])

        def store(tiles, batch):
            out.index_copy_(0, tiles, batch["acc"])

        for chunk, _, feat, batch in _sweep(bins, isect, basis, {"acc": out}, store):
            batch["acc"].baddbmm_(feat.transpose(1, 2), chunk.weight.transpose(1, 2))
        bg = torch.cat([background, background.new_zeros(1)])
        out += (1.0 - out[:, -1:]) * bg[:, None]
        ctx.save_for_backward(opacities, out)
        ctx.bins, ctx.isect, ctx.basis, ctx.channels = bins, isect, basis, features.shape[1]
        image = _untile(out, bins, width, height)
        return image[..., :-1], image[..., -1:]

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        opacities, out = ctx.saved_tensors
        bins, isect, basis = ctx.bins, ctx.isect, ctx.basis
        grad = _tile(torch.cat([grad_image, grad_alpha], dim=-1), bins)
        # dL/dalpha_i needs what everything behind Gaussian i adds to the pixel: the total
        # (background included) minus what lies in front, so one front-to-back pass suffices.
        total = (grad * out).sum(1)[..., None]
        g_features = torch.zeros_like(isect.table[:, 7:])
        moments = torch.zeros_like(isect.table[:, :6])
        state = {"grad": grad, "total": total, "front": torch.zeros_like(total)}
        for chunk, rows, feat, batch in _sweep(bins, isect, basis, state):
            g_tile = batch["grad"]
            flat = rows.reshape(-1)
            g_chunk_features = torch.bmm(g_tile, chunk.weight).transpose(1, 2)
            g_features.index_copy_(0, flat, g_chunk_features.reshape(flat.shape[0], -1))
            q = torch.bmm(g_tile.transpose(1, 2), feat.transpose(1, 2))
            seen = torch.cumsum(chunk.weight * q, dim=-1).add_(batch["front"])
            batch["front"] = seen[..., -1:]
            # -dL/dalpha_i = (what lies behind i) / (1 - alpha_i) - T_i q_i
            minus_g_alpha = ((batch["total"] - seen).div_(chunk.one_minus)
                             .addcmul_(chunk.t_before, q, value=-1.0))
            # -dalpha/ds = -alpha where alpha was composited and not capped at ALPHA_MAX, else 0.
            minus_d_alpha = _threshold(chunk.alpha.neg_(), -ALPHA_MAX, 0.0, inplace=True)
            g_s = minus_g_alpha.mul_(minus_d_alpha).mul_(torch.sign(chunk.drawn_after))
            m = torch.bmm(basis.T.expand(len(rows), -1, -1), g_s).transpose(1, 2)
            moments.index_copy_(0, flat, m.reshape(flat.shape[0], 6))
        n = opacities.shape[0]
        g_geometry = opacities.new_zeros(n, 6)
        g_geometry.index_add_(0, bins.gauss_ids, _geometry_grads(moments[:-1], isect.local))
        g_feat = opacities.new_zeros(n, ctx.channels)
        g_feat.index_add_(0, bins.gauss_ids, g_features[:-1, :-1])
        # Gaussians with zero opacity are never binned, so their zero gradient stays finite.
        g_opacity = g_geometry[:, 5] / opacities.clamp_min(torch.finfo(opacities.dtype).tiny)
        return (g_geometry[:, 0:2], g_geometry[:, 2:5], g_opacity, g_feat,
                None, None, None, None)


def _geometry_grads(moments: torch.Tensor, local: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Chain rule from s = cut - 0.5 d^T C d, d = p - m (alpha = opacity e^-cut e^s), to the
    mean, the conic and log(opacity) per intersection, through moments of dL/ds over pixels.

    moments (M, 6): sums over the tile's pixels of dL/ds times [1, x, y, x^2, xy, y^2] in the
    tile's centred frame; local: (mx, my, a, b, c), each (M,), in that frame.
    Returns (M, 6): dL/d(mx, my, a, b, c, log opacity).
    """
    s0, sx, sy, sxx, sxy, syy = moments.unbind(-1)
    mx, my, a, b, c = local
    # First moments about the mean: sum of dL/dz * (p - m).
    dx, dy = sx - mx * s0, sy - my * s0
    g_mx = a * dx + b * dy
    g_my = b * dx + c * dy
    g_a = -0.5 * (sxx - 2.0 * mx * sx + mx * mx * s0)
    g_b = -(sxy - mx * sy - my * sx + mx * my * s0)
    g_c = -0.5 * (syy - 2.0 * my * sy + my * my * s0)
    return torch.stack([g_mx, g_my, g_a, g_b, g_c, s0], dim=-1)


def _tile(image: torch.Tensor, bins: TileBins) -> torch.Tensor:
    """(H, W, C) -> (T, C, P), tiles and pixels in row-major order, zero padded to whole tiles."""
    ts = bins.tile_size
    h, w, c = image.shape
    padded = image.new_zeros(bins.tiles_y * ts, bins.tiles_x * ts, c)
    padded[:h, :w] = image
    return (padded.reshape(bins.tiles_y, ts, bins.tiles_x, ts, c).permute(0, 2, 4, 1, 3)
            .reshape(bins.tiles_x * bins.tiles_y, c, ts * ts))


def _untile(tiles: torch.Tensor, bins: TileBins, width: int, height: int) -> torch.Tensor:
    """(T, C, P) -> (H, W, C)."""
    ts, c = bins.tile_size, tiles.shape[1]
    image = (tiles.reshape(bins.tiles_y, bins.tiles_x, c, ts, ts).permute(0, 3, 1, 4, 2)
             .reshape(bins.tiles_y * ts, bins.tiles_x * ts, c))
    return image[:height, :width]


COMPOSITORS = ("auto", "numba", "torch")


def _numba_kernels():
    """The compiled kernels module, or None where numba is not installed."""
    try:
        from savatar.core.render import composite_numba
    except ImportError:
        return None
    return composite_numba


# Overrides what "auto" means (e.g. "torch" to compare with the reference in a whole program).
COMPOSITOR_ENV = "SAVATAR_CPU_COMPOSITOR"


def resolve_compositor(name: str) -> str:
    """"auto" -> $SAVATAR_CPU_COMPOSITOR if set, else "numba" where numba imports, else "torch";
    ValueError for unknown names."""
    if name == "auto" and os.environ.get(COMPOSITOR_ENV, "auto") != "auto":
        name = os.environ[COMPOSITOR_ENV]
    if name not in COMPOSITORS:
        raise ValueError(f"compositor must be one of {', '.join(COMPOSITORS)}, got {name!r}")
    if name == "auto" or (name == "numba" and _numba_kernels() is None):
        return "numba" if _numba_kernels() is not None else "torch"
    return name


_POOL: ThreadPoolExecutor | None = None


def _run_split(kernel, order: torch.Tensor, *args) -> None:
    """Run kernel(tiles, *args) over the tiles in `order` (most crowded first), dealt round-robin
    to torch.get_num_threads() threads so each gets a similar share of the work."""
    global _POOL
    threads = max(1, min(torch.get_num_threads(), len(order)))
    if threads == 1:
        kernel(order.numpy(), *args)
        return
    if _POOL is None or _POOL._max_workers < threads:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="savatar-raster")
    parts = [order[i::threads].contiguous().numpy() for i in range(threads)]
    for f in [_POOL.submit(kernel, part, *args) for part in parts]:
        f.result()


class _CompositeCompiled(torch.autograd.Function):
    """rasterize_to_pixels with the compiled kernels of composite_numba; pixels are written in
    place in (H, W, C), no tiling of images."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, bins, background, width, height):
        kernels = _numba_kernels()
        dtype = features.dtype
        cut = support_cutoff(opacities)
        scale = opacities * torch.exp(-cut)
        geo = torch.cat([means2d, conics, cut[:, None], scale[:, None]], 1).to(dtype).contiguous()
        feat = features.contiguous()
        counts = bins.offsets[1:] - bins.offsets[:-1]
        order = torch.argsort(counts, descending=True, stable=True)
        order = order[counts.index_select(0, order) > 0]
        gauss_ids = bins.gauss_ids.contiguous()
        out = features.new_zeros(height, width, features.shape[1])
        alpha = features.new_zeros(height, width)
        common = (bins.offsets.numpy(), gauss_ids.numpy(), geo.numpy(), feat.numpy(), bins.tile_size,
                  bins.tiles_x, width, height)
        _run_split(kernels.forward_tiles, order, *common, out.numpy(), alpha.numpy())
        image = out + (1.0 - alpha)[..., None] * background
        ctx.save_for_backward(opacities, image, alpha)
        ctx.bins, ctx.common, ctx.order = bins, common, order
        return image, alpha[..., None]

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        kernels = _numba_kernels()
        opacities, image, alpha = ctx.saved_tensors
        bins, common = ctx.bins, ctx.common
        grad_image = grad_image.contiguous()
        grad_alpha = grad_alpha[..., 0].contiguous()
        total = (grad_image * image).sum(-1) + grad_alpha * alpha
        m, channels = len(bins.gauss_ids), image.shape[-1]
        g_feat_rows = image.new_zeros(m, channels)
        g_geo_rows = image.new_zeros(m, 6)
        _run_split(kernels.backward_tiles, ctx.order, *common, grad_image.numpy(), grad_alpha.numpy(),
                   total.numpy(), g_feat_rows.numpy(), g_geo_rows.numpy())
        n = opacities.shape[0]
        g_geo = image.new_zeros(n, 6).index_add_(0, bins.gauss_ids, g_geo_rows)
        g_feat = image.new_zeros(n, channels).index_add_(0, bins.gauss_ids, g_feat_rows)
        # The last column is dL/dlog(opacity); Gaussians with zero opacity are never binned.
        g_opacity = g_geo[:, 5] / opacities.clamp_min(torch.finfo(opacities.dtype).tiny)
        return (g_geo[:, 0:2], g_geo[:, 2:5], g_opacity, g_feat, None, None, None, None)


def rasterize_to_pixels(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                        features: torch.Tensor, bins: TileBins, background: torch.Tensor,
                        width: int, height: int,
                        compositor: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back compositing of binned 2D Gaussians (differentiable in the first four).

    means2d (N, 2), conics (N, 3), opacities (N,), features (N, C); background (C,).
    compositor: "numba" (compiled, composite_numba), "torch" (the reference, PyTorch only) or
    "auto" (numba where installed). Both give the same image and gradients to rounding.
    Returns image (H, W, C) = sum(f_i a_i T_i) + T_final * background and alpha (H, W, 1).
    """
    background = background.to(features.dtype)
    if resolve_compositor(compositor) == "numba" and features.device.type == "cpu":
        return _CompositeCompiled.apply(means2d, conics, opacities, features, bins, background,
                                        width, height)
    return _RasterizeToPixels.apply(means2d, conics, opacities, features, bins, background,
                                    width, height)


def rasterize_cpu(g: WorldGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                  height: int, background: torch.Tensor, sh_degree: int | None = None,
                  rasterize_mode: str = "classic", tile_size: int = TILE_SIZE,
                  compositor: str = "auto") -> RenderOutput:
    """Render g through an OpenCV camera (viewmat (4, 4) world-to-camera, K (3, 3)).

    background: (3,). Differentiable in means, quats, scales, opacities and sh. compositor: see
    rasterize_to_pixels.
    Returns rgb (H, W, 3), alpha (H, W, 1), and depth (H, W, 1), the expected depth
    sum(z_i a_i T_i) / alpha as gsplat's "ED" mode (0 where alpha is 0).
    """
    out, _ = _rasterize(g, viewmat, K, width, height, background, sh_degree, rasterize_mode,
                        tile_size, compositor, None)
    return out


def rasterize_cpu_window(g: WorldGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                         height: int, background: torch.Tensor, margin: int = 0,
                         sh_degree: int | None = None, rasterize_mode: str = "classic",
                         tile_size: int = TILE_SIZE, compositor: str = "auto",
                         ) -> tuple[RenderOutput, tuple[int, int, int, int]]:
    """rasterize_cpu's image, drawn only over the window that the Gaussians reach (see
    support_window; margin widens it). Returns the output over the window, (h, w, ...) with
    h = y1 - y0 and w = x1 - x0, and the window (x0, y0, x1, y1). Inside the window the pixels
    are the full image's (the projection is the full frame's, shifted by whole pixels); outside
    it the full image is the background, alpha 0 and depth 0. Work is spent on the window only:
    for a head in a larger frame, fewer pixels to composite, tile and compare.
    """
    return _rasterize(g, viewmat, K, width, height, background, sh_degree, rasterize_mode,
                      tile_size, compositor, margin)


def _rasterize(g: WorldGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
               background: torch.Tensor, sh_degree: int | None, rasterize_mode: str,
               tile_size: int, compositor: str,
               margin: int | None) -> tuple[RenderOutput, tuple[int, int, int, int]]:
    """Both rasterize_cpu (margin None: the whole image) and rasterize_cpu_window."""
    dtype = g.means.dtype
    viewmat, K = viewmat.to(dtype), K.to(dtype)
    proj = project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K, width, height,
                             rasterize_mode=rasterize_mode)
    window = (0, 0, width, height) if margin is None else support_window(proj, width, height, margin)
    x0, y0, x1, y1 = window
    if x0 or y0:
        # Whole pixels: the shift is exact, so every pixel sees the same offsets as in the frame.
        shift = torch.tensor([x0, y0], dtype=dtype, device=proj.means2d.device)
        proj.means2d = proj.means2d - shift
    colors = sh_to_rgb(g.sh, g.means, camera_center(viewmat), sh_degree)
    bins = intersect_tiles(proj, x1 - x0, y1 - y0, tile_size)
    features = torch.cat([colors, proj.depths[:, None]], dim=1)
    background = torch.cat([background.to(dtype), background.new_zeros(1, dtype=dtype)])
    image, alpha = rasterize_to_pixels(proj.means2d, proj.conics, proj.opacities, features, bins,
                                       background, x1 - x0, y1 - y0, compositor)
    depth = image[..., 3:4] / alpha.clamp_min(1e-10)
    return RenderOutput(rgb=image[..., :3], alpha=alpha, depth=depth), window

"""Differentiable pure-PyTorch 3DGS rasterizer for machines without a GPU.

Implements the image formation of design.md in three exposed steps:
1. project_gaussians: EWA projection to 2D means, covariances, conics, depths, radii;
2. intersect_tiles: which Gaussians touch which 16x16 tile, front to back (vectorized);
3. rasterize_to_pixels: per-tile compositing with a hand-written backward pass.

Support of a Gaussian. design.md gives the extent as 3 sigma of the largest eigenvalue. A
renderer whose per-pixel support is "whatever tiles the extent touches" (the reference 3DGS
code) gives results that depend on where tile borders fall, so here a Gaussian contributes to
a pixel only inside its 3-sigma ellipse (Mahalanobis distance <= 3, whose bounding radius is
that extent) and where alpha >= 1/255. Tiles are chosen to cover exactly that support, which
makes the image independent of the tiling.

Compositing runs front to back over batches of tiles with equal-ish Gaussian counts, in chunks
of Gaussians, and stops once every pixel of the batch is below the transmittance threshold.
The backward pass recomputes each chunk instead of storing per pixel-Gaussian state, so memory
is bounded by the chunk size, not by the number of pixel-Gaussian pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from savatar.core.gaussians import WorldGaussians
from savatar.core.render import RenderOutput
from savatar.core.sh import camera_center, sh_to_rgb

EPS2D = 0.3
NEAR_PLANE = 0.01
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
EXTENT_SIGMA = 3.0
TILE_SIZE = 16
# Pixel-Gaussian pairs per compositing chunk: small enough that a chunk's temporaries stay in
# cache, large enough that per-op Python overhead is small.
CHUNK_PAIRS = 1 << 17
CHUNK_GAUSSIANS = 32
# Coefficients of padding slots: z = -1e4 never passes the threshold 0.
_PAD_Z = -1.0e4


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

    gauss_ids: (M,) int64, grouped by tile in row-major tile order; offsets: (T + 1,) int64,
    tile t owns gauss_ids[offsets[t]:offsets[t + 1]]; T = tiles_x * tiles_y.
    """

    tile_size: int
    tiles_x: int
    tiles_y: int
    gauss_ids: torch.Tensor
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
    and compensations; radii follow design.md (see Projection).
    """
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
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
        half_tr = 0.5 * (cov2d[:, 0, 0] + cov2d[:, 1, 1])
        lam_max = half_tr + torch.sqrt((half_tr * half_tr - det).clamp_min(0.0))
        radius = torch.ceil(EXTENT_SIGMA * torch.sqrt(lam_max))
        mx, my = means2d.unbind(-1)
        on_screen = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        valid = in_front & on_screen & torch.isfinite(radius)
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)
    return Projection(means2d=means2d, covars2d=cov2d, conics=conics, depths=means_c[:, 2],
                      opacities=opacities, compensations=compensations, radii=radii, valid=valid)


def support_cutoff(opacities: torch.Tensor) -> torch.Tensor:
    """Largest 0.5 d^T Sigma^-1 d (N,) at which a Gaussian of these opacities (N,) still
    contributes: inside the 3-sigma ellipse and with alpha >= 1/255. Negative: never."""
    with torch.no_grad():
        return torch.clamp_max(torch.log(opacities.clamp_min(1e-30) / ALPHA_MIN), 0.5 * EXTENT_SIGMA ** 2)


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
    ok = proj.valid & (cut >= 0)
    ids = torch.nonzero(ok).squeeze(1)
    ids = ids[torch.argsort(proj.depths[ids], stable=True)]
    m = proj.means2d[ids]
    reach = torch.sqrt(2.0 * cut[ids])
    half = reach[:, None] * torch.sqrt(torch.diagonal(proj.covars2d[ids], dim1=1, dim2=2))
    size = torch.tensor([width, height], dtype=m.dtype, device=device)
    lo = torch.ceil(m - half - 0.5).clamp(min=0).minimum(size)
    hi = torch.floor(m + half - 0.5).minimum(size - 1).clamp(min=-1)
    hit = (lo <= hi).all(dim=1)
    ids, lo, hi = ids[hit], lo[hit].long() // tile_size, hi[hit].long() // tile_size
    span = hi - lo + 1
    counts = span[:, 0] * span[:, 1]
    total = int(counts.sum())
    owner = torch.repeat_interleave(torch.arange(len(ids), device=device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - first[owner]
    tx = lo[owner, 0] + local % span[owner, 0]
    ty = lo[owner, 1] + local // span[owner, 0]
    tile = ty * tiles_x + tx
    # Stable sort by tile keeps the depth order established above inside every tile.
    tile, order = torch.sort(tile, stable=True)
    per_tile = torch.bincount(tile, minlength=tiles_x * tiles_y)
    offsets = torch.zeros(tiles_x * tiles_y + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(per_tile, 0)
    return TileBins(tile_size=tile_size, tiles_x=tiles_x, tiles_y=tiles_y,
                    gauss_ids=ids[owner[order]], offsets=offsets)


def _tile_batches(bins: TileBins) -> list[tuple[torch.Tensor, int]]:
    """Group non-empty tiles, most crowded first, so that tiles batched together have similar
    Gaussian counts (little padding). Returns (tile ids (B,), padded count) pairs."""
    counts = bins.offsets[1:] - bins.offsets[:-1]
    order = torch.argsort(counts, descending=True, stable=True)
    order = order[counts[order] > 0]
    pixels = bins.tile_size * bins.tile_size
    per_batch = max(1, CHUNK_PAIRS // (pixels * CHUNK_GAUSSIANS))
    batches = []
    for start in range(0, len(order), per_batch):
        tiles = order[start:start + per_batch]
        batches.append((tiles, int(counts[tiles[0]])))
    return batches


class _TileGeometry:
    """Per-batch constants: pixel basis and gathered Gaussian indices with padding."""

    def __init__(self, bins: TileBins, tiles: torch.Tensor, padded: int, n: int,
                 dtype: torch.dtype):
        ts = bins.tile_size
        device = tiles.device
        pix = torch.arange(ts * ts, device=device)
        # Coordinates relative to the tile centre keep the expanded quadratic form
        # well conditioned in float32.
        px = (pix % ts).to(dtype) + 0.5 - 0.5 * ts
        py = (pix // ts).to(dtype) + 0.5 - 0.5 * ts
        self.basis = torch.stack([torch.ones_like(px), px, py, px * px, px * py, py * py], dim=1)
        self.origin = torch.stack([(tiles % bins.tiles_x).to(dtype) * ts + 0.5 * ts,
                                   (tiles // bins.tiles_x).to(dtype) * ts + 0.5 * ts], dim=1)
        slot = torch.arange(padded, device=device)
        start = bins.offsets[tiles]
        count = bins.offsets[tiles + 1] - start
        used = slot[None, :] < count[:, None]
        pos = (start[:, None] + slot[None, :]).clamp(max=max(len(bins.gauss_ids) - 1, 0))
        self.gid = torch.where(used, bins.gauss_ids[pos], torch.full_like(pos, n))


class _Params:
    """Per-Gaussian quantities, with one padding row at index N."""

    def __init__(self, means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                 features: torch.Tensor):
        n, dtype, device = means2d.shape[0], means2d.dtype, means2d.device
        pad = torch.zeros(1, dtype=dtype, device=device)
        self.means2d = torch.cat([means2d, pad.expand(1, 2)])
        self.conics = torch.cat([conics, pad.expand(1, 3)])
        self.opacities = torch.cat([opacities, pad + 1.0])
        self.log_opacity = torch.log(self.opacities.clamp_min(1e-30))
        self.log_opacity[n] = _PAD_Z
        cut = support_cutoff(opacities)
        # z = log(opacity) - 0.5 d^T Sigma^-1 d; the support test is z >= threshold.
        self.threshold = torch.cat([self.log_opacity[:n] - cut, pad])
        # An appended constant channel makes the compositing matmul also return sum(w) = alpha.
        self.features = torch.cat([torch.cat([features, torch.ones_like(features[:, :1])], 1),
                                   pad.expand(1, features.shape[1] + 1)])

    def chunk(self, gid: torch.Tensor, origin: torch.Tensor):
        """Coefficients of z over the pixel basis for gid (B, G) in tiles with origin (B, 2).

        Returns coef (B, 6, G), threshold (B, 1, G), features (B, G, C + 1), and the local
        means and conics used by the backward pass.
        """
        m = self.means2d[gid] - origin[:, None, :]
        mx, my = m.unbind(-1)
        a, b, c = self.conics[gid].unbind(-1)
        lo = self.log_opacity[gid]
        kx, ky = a * mx + b * my, b * mx + c * my
        coef = torch.stack([lo - 0.5 * (kx * mx + ky * my), kx, ky, -0.5 * a, -b, -0.5 * c], dim=1)
        return coef, self.threshold[gid][:, None, :], self.features[gid], (mx, my, a, b, c)


def _composite_chunk(basis: torch.Tensor, coef: torch.Tensor, threshold: torch.Tensor,
                     trans: torch.Tensor):
    """Alphas and weights of one chunk of Gaussians for a batch of tiles.

    basis (P, 6), coef (B, 6, G), threshold (B, 1, G), trans (B, P, 1) transmittance before the
    chunk. Returns alpha (B, P, G) (0 outside the support, clamped at ALPHA_MAX), t_before and
    t_after (B, P, G) transmittance before/after each Gaussian, and live (B, P, G), the
    Gaussians composited before the pixel's transmittance would fall to T_MIN.
    """
    z = torch.matmul(basis, coef)
    z.masked_fill_(z < threshold, -math.inf)
    alpha = z.exp_().clamp_max_(ALPHA_MAX)
    t_after = torch.cumprod(1.0 - alpha, dim=-1).mul_(trans)
    t_before = torch.cat([trans, t_after[..., :-1]], dim=-1)
    # Transmittance only decreases, so live is a prefix: the first Gaussian that would take
    # T to T_MIN or below ends the pixel, exclusively, as in 3DGS and gsplat.
    live = t_after > T_MIN
    return alpha, t_before, t_after, live


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, bins, background, width, height):
        params = _Params(means2d, conics, opacities, features)
        n, channels = means2d.shape[0], features.shape[1] + 1
        pixels = bins.tile_size * bins.tile_size
        out = torch.zeros(bins.tiles_x * bins.tiles_y, pixels, channels,
                          dtype=means2d.dtype, device=means2d.device)
        for tiles, padded in _tile_batches(bins):
            geo = _TileGeometry(bins, tiles, padded, n, means2d.dtype)
            trans = torch.ones(len(tiles), pixels, 1, dtype=means2d.dtype, device=means2d.device)
            acc = out[tiles]
            for g0 in range(0, padded, CHUNK_GAUSSIANS):
                coef, thr, feat, _ = params.chunk(geo.gid[:, g0:g0 + CHUNK_GAUSSIANS], geo.origin)
                _, t_before, t_after, live = _composite_chunk(geo.basis, coef, thr, trans)
                weight = t_before.sub_(t_after).mul_(live)
                acc.baddbmm_(weight, feat)
                trans = t_after[..., -1:]
                if not bool((trans > T_MIN).any()):
                    break
            out[tiles] = acc
        bg = torch.cat([background, background.new_zeros(1)])
        out += (1.0 - out[..., -1:]) * bg
        ctx.save_for_backward(means2d, conics, opacities, features, out)
        ctx.bins, ctx.background = bins, background
        image = _untile(out, bins, width, height)
        return image[..., :-1], image[..., -1:]

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        means2d, conics, opacities, features, out = ctx.saved_tensors
        bins = ctx.bins
        params = _Params(means2d, conics, opacities, features)
        n, dtype, device = means2d.shape[0], out.dtype, out.device
        grad = _tile(torch.cat([grad_image, grad_alpha], dim=-1), bins)
        # dL/dalpha_i needs what everything behind Gaussian i adds to the pixel: the total
        # (background included) minus what lies in front, so one front-to-back pass suffices.
        total = (grad * out).sum(-1, keepdim=True)
        g_feat = torch.zeros(n + 1, out.shape[-1], dtype=dtype, device=device)
        g_geom = torch.zeros(n + 1, 6, dtype=dtype, device=device)
        pixels = bins.tile_size * bins.tile_size
        for tiles, padded in _tile_batches(bins):
            geo = _TileGeometry(bins, tiles, padded, n, dtype)
            g_tile, total_tile = grad[tiles], total[tiles]
            trans = torch.ones(len(tiles), pixels, 1, dtype=dtype, device=device)
            front = torch.zeros_like(trans)
            for g0 in range(0, padded, CHUNK_GAUSSIANS):
                gid = geo.gid[:, g0:g0 + CHUNK_GAUSSIANS]
                coef, thr, feat, local = params.chunk(gid, geo.origin)
                alpha, t_before, t_after, live = _composite_chunk(geo.basis, coef, thr, trans)
                weight = (t_before - t_after).mul_(live)
                flat = gid.reshape(-1)
                g_feat.index_add_(0, flat, torch.bmm(weight.transpose(1, 2), g_tile).flatten(0, 1))
                q = torch.bmm(g_tile, feat.transpose(1, 2))
                seen = torch.cumsum(weight * q, dim=-1).add_(front)
                # dL/dalpha_i = T_i q_i - (what lies behind i) / (1 - alpha_i)
                g_alpha = (total_tile - seen).div_(1.0 - alpha).neg_().addcmul_(t_before, q)
                # dalpha/dz = alpha, unless alpha is clamped or outside the support (then 0).
                g_z = g_alpha.mul_(alpha).mul_(live & (alpha < ALPHA_MAX))
                moments = torch.matmul(g_z.transpose(1, 2), geo.basis)
                g_geom.index_add_(0, flat, _geometry_grads(moments, local).flatten(0, 1))
                front = seen[..., -1:]
                trans = t_after[..., -1:]
                if not bool((trans > T_MIN).any()):
                    break
        g_geom, g_feat = g_geom[:n], g_feat[:n]
        return (g_geom[:, 0:2], g_geom[:, 2:5], g_geom[:, 5] / params.opacities[:n],
                g_feat[:, :-1], None, None, None, None)


def _geometry_grads(moments: torch.Tensor, local: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Chain rule from z = log(o) - 0.5 d^T C d, d = p - m, to (m, conic, log o) per
    (tile, Gaussian) pair, through the moments of dL/dz over the tile's pixels.

    moments (B, G, 6): sums over pixels of dL/dz times [1, x, y, x^2, xy, y^2] in the tile's
    centred frame; local: (mx, my, a, b, c), each (B, G), in that frame.
    Returns (B, G, 6): d/d(mx, my, a, b, c, log o).
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
    """(H, W, C) -> (T, P, C) tile-major, zero padded to whole tiles."""
    ts = bins.tile_size
    h, w, c = image.shape
    padded = image.new_zeros(bins.tiles_y * ts, bins.tiles_x * ts, c)
    padded[:h, :w] = image
    return (padded.reshape(bins.tiles_y, ts, bins.tiles_x, ts, c).permute(0, 2, 1, 3, 4)
            .reshape(bins.tiles_x * bins.tiles_y, ts * ts, c))


def _untile(tiles: torch.Tensor, bins: TileBins, width: int, height: int) -> torch.Tensor:
    """(T, P, C) -> (H, W, C)."""
    ts, c = bins.tile_size, tiles.shape[-1]
    image = (tiles.reshape(bins.tiles_y, bins.tiles_x, ts, ts, c).permute(0, 2, 1, 3, 4)
             .reshape(bins.tiles_y * ts, bins.tiles_x * ts, c))
    return image[:height, :width]


def rasterize_to_pixels(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                        features: torch.Tensor, bins: TileBins, background: torch.Tensor,
                        width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back compositing of binned 2D Gaussians (differentiable in the first four).

    means2d (N, 2), conics (N, 3), opacities (N,), features (N, C); background (C,).
    Returns image (H, W, C) = sum(f_i a_i T_i) + T_final * background and alpha (H, W, 1).
    """
    return _RasterizeToPixels.apply(means2d, conics, opacities, features, bins,
                                    background.to(features.dtype), width, height)


def rasterize_cpu(g: WorldGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                  height: int, background: torch.Tensor, sh_degree: int | None = None,
                  rasterize_mode: str = "classic", tile_size: int = TILE_SIZE) -> RenderOutput:
    """Render g through an OpenCV camera (viewmat (4, 4) world-to-camera, K (3, 3)).

    background: (3,). Differentiable in means, quats, scales, opacities and sh.
    Returns rgb (H, W, 3), alpha (H, W, 1), and depth (H, W, 1), the expected depth
    sum(z_i a_i T_i) / alpha as gsplat's "ED" mode (0 where alpha is 0).
    """
    dtype = g.means.dtype
    viewmat, K = viewmat.to(dtype), K.to(dtype)
    proj = project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K, width, height,
                             rasterize_mode=rasterize_mode)
    colors = sh_to_rgb(g.sh, g.means, camera_center(viewmat), sh_degree)
    bins = intersect_tiles(proj, width, height, tile_size)
    features = torch.cat([colors, proj.depths[:, None]], dim=1)
    background = torch.cat([background.to(dtype), background.new_zeros(1, dtype=dtype)])
    image, alpha = rasterize_to_pixels(proj.means2d, proj.conics, proj.opacities, features, bins,
                                       background, width, height)
    depth = image[..., 3:4] / alpha.clamp_min(1e-10)
    return RenderOutput(rgb=image[..., :3], alpha=alpha, depth=depth)

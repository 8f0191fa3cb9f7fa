"""CPU rasterizer against gsplat's pure-PyTorch reference functions and a plain
Gaussian-by-Gaussian compositing reference written here after gsplat 1.5.3's CUDA kernels
(docs/conventions.md image formation)."""
from __future__ import annotations

import math
import subprocess
import sys
import types

import pytest
import torch

from savatar.core.gaussians.gaussians import WorldGaussians, rgb_to_sh0
from savatar.core.gaussians.sh import camera_center, eval_sh, sh_to_rgb
from savatar.core.render import api as render_mod
from savatar.core.render.api import available_backends, render, resolve_backend
from savatar.core.render.output import RenderOutput
from savatar.core.render.rasterize_cpu import (
    ALPHA_MAX, ALPHA_MIN, covariance_3d, intersect_tiles, project_gaussians, rasterize_cpu,
    rasterize_cpu_window, resolve_compositor, support_window,
)

torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")

F64 = torch.float64
GSPLAT_TILE = 16  # gsplat's default tile size


def look_from(yaw: float, pitch: float, position: tuple[float, float, float]) -> torch.Tensor:
    """World-to-camera (4, 4) of a camera at position, rotated by yaw (about y) then pitch."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    r_yaw = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]], dtype=F64)
    r_pitch = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]], dtype=F64)
    cam_to_world = r_yaw @ r_pitch
    view = torch.eye(4, dtype=F64)
    view[:3, :3] = cam_to_world.T
    view[:3, 3] = -cam_to_world.T @ torch.tensor(position, dtype=F64)
    return view


def intrinsics(width: int, height: int, focal: float) -> torch.Tensor:
    return torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=F64)


def scene_in_view(n: int, viewmat: torch.Tensor, seed: int, degree: int = 3, depth=(1.5, 3.0),
                  spread: float = 0.45, scale=(0.02, 0.12), opacity=(0.3, 0.9)) -> WorldGaussians:
    """n random Gaussians whose centres lie inside the camera's view (float64)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.empty(n, dtype=F64).uniform_(*depth, generator=gen)
    xy = torch.empty(n, 2, dtype=F64).uniform_(-spread, spread, generator=gen) * z[:, None]
    means_c = torch.cat([xy, z[:, None]], dim=1)
    rot, t = viewmat[:3, :3], viewmat[:3, 3]
    means = (means_c - t) @ rot
    k = (degree + 1) ** 2
    return WorldGaussians(
        means=means,
        quats=torch.randn(n, 4, dtype=F64, generator=gen),
        scales=torch.empty(n, 3, dtype=F64).uniform_(*scale, generator=gen),
        opacities=torch.empty(n, dtype=F64).uniform_(*opacity, generator=gen),
        sh=0.4 * torch.randn(n, k, 3, dtype=F64, generator=gen),
    )


def with_mixed_opacities(g: WorldGaussians, seed: int) -> WorldGaussians:
    """g with some opacities at 1 (alpha reaches the 0.999 cap) and some faint ones (0.01-0.1,
    small opacity-aware extents)."""
    gen = torch.Generator().manual_seed(seed)
    opacities = g.opacities.clone()
    opacities[:8] = 1.0
    opacities[8:30] = torch.empty(22, dtype=F64).uniform_(0.01, 0.1, generator=gen)
    return WorldGaussians(g.means, g.quats, g.scales, opacities, g.sh)


def gsplat_projection(g: WorldGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                      height: int, rasterize_mode: str = "classic"):
    """gsplat's projection: means2d (N, 2), depths (N,), conics (N, 3) and compensated opacities
    (N,) from its PyTorch reference; radii (N, 2) int32 as its CUDA kernel computes them
    (ProjectionEWA3DGSFused.cu; the PyTorch reference always uses 3.33 sigma): per axis
    ceil(e sqrt(Sigma2D[axis, axis])), e = min(3.33, sqrt(2 ln(255 opacity))), 0 when culled
    (behind the near plane, opacity < 1/255, or the box off the image)."""
    covars, _ = torch_impl._quat_scale_to_covar_preci(g.quats, g.scales, compute_preci=False)
    _, means2d, depths, conics, comp = torch_impl._fully_fused_projection(
        g.means, covars, viewmat[None], K[None], width, height, eps2d=0.3, near_plane=0.01,
        calc_compensations=rasterize_mode == "antialiased")
    means2d, depths, conics = means2d[0], depths[0], conics[0]
    opacities = g.opacities if comp is None else g.opacities * comp[0]
    with torch.no_grad():
        means_c, covars_c = torch_impl._world_to_cam(g.means, covars, viewmat[None])
        _, covars2d = torch_impl._persp_proj(means_c, covars_c, K[None], width, height)
        variances = torch.diagonal(covars2d[0], dim1=-2, dim2=-1) + 0.3
        threshold = 1.0 / 255.0
        kept = (depths >= 0.01) & (opacities >= threshold)
        extent = torch.sqrt(2.0 * torch.log(opacities.clamp_min(threshold) / threshold))
        radius = torch.ceil(extent.clamp_max(3.33)[:, None] * torch.sqrt(variances))
        (mx, my), (rx, ry) = means2d.unbind(-1), radius.unbind(-1)
        kept &= (rx > 0) | (ry > 0)
        kept &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.where(kept[:, None], radius, torch.zeros_like(radius)).to(torch.int32)
    return means2d, depths, conics, opacities, radii


def reference_render(g: WorldGaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                     height: int, background: torch.Tensor, rasterize_mode: str = "classic"):
    """docs/conventions.md as gsplat's CUDA kernels do it, written plainly: the projection above, tiles
    from gsplat's _isect_tiles on those radii, SH from its reference; then every pixel composites
    its tile's Gaussians one at a time, nearest first, with RasterizeToPixels3DGSFwd.cu's test:
    alpha = min(0.999, opacity exp(-sigma)), skipped if sigma < 0 or alpha < 1/255, stop before
    a Gaussian that would take the transmittance to 1e-4 or below.

    Returns rgb (H, W, 3), alpha (H, W, 1), depth (H, W, 1), and stopped (H, W), the pixels
    whose transmittance reached T_MIN."""
    means2d, depths, conics, opacities, radii = gsplat_projection(g, viewmat, K, width, height,
                                                                   rasterize_mode)
    campos = torch.inverse(viewmat)[:3, 3]
    colors = torch.clamp_min(
        torch_impl._spherical_harmonics(g.sh_degree, g.means - campos, g.sh) + 0.5, 0.0)
    ts = GSPLAT_TILE
    tiles_x, tiles_y = math.ceil(width / ts), math.ceil(height / ts)
    _, isect_ids, flatten_ids = torch_impl._isect_tiles(
        means2d.detach()[None], radii[None], depths.detach()[None], ts, tiles_x, tiles_y)
    isect_tiles = isect_ids >> 32  # one image: the high word is the tile id

    ys, xs = torch.meshgrid(torch.arange(ts, dtype=F64), torch.arange(ts, dtype=F64), indexing="ij")
    rows = []
    for tile_y in range(tiles_y):
        row = []
        for tile_x in range(tiles_x):
            px, py = xs + tile_x * ts + 0.5, ys + tile_y * ts + 0.5
            trans = torch.ones(ts, ts, dtype=F64)
            done = torch.zeros(ts, ts, dtype=torch.bool)
            color = torch.zeros(ts, ts, 3, dtype=F64)
            depth = torch.zeros(ts, ts, dtype=F64)
            # _isect_tiles sorts by tile, then depth.
            for i in flatten_ids[isect_tiles == tile_y * tiles_x + tile_x].tolist():
                dx, dy = means2d[i, 0] - px, means2d[i, 1] - py
                a, b, c = conics[i]
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = torch.clamp_max(opacities[i] * torch.exp(-sigma), 0.999)
                used = (sigma >= 0) & (alpha >= 1.0 / 255.0) & ~done
                next_trans = trans * (1.0 - alpha)
                stops = used & (next_trans <= 1e-4)
                drawn = used & ~stops
                done = done | stops
                weight = torch.where(drawn, alpha * trans, torch.zeros_like(alpha))
                color = color + weight[..., None] * colors[i]
                depth = depth + weight * depths[i]
                trans = torch.where(drawn, next_trans, trans)
            row.append(torch.cat([color, depth[..., None], trans[..., None], done[..., None]], -1))
        rows.append(torch.cat(row, dim=1))
    image = torch.cat(rows, dim=0)[:height, :width]
    color, depth, trans, done = image[..., :3], image[..., 3:4], image[..., 4:5], image[..., 5] > 0
    alpha = 1.0 - trans
    return color + trans * background, alpha, depth / alpha.clamp_min(1e-10), done


def with_grad(g: WorldGaussians) -> WorldGaussians:
    return WorldGaussians(*(t.detach().clone().requires_grad_() for t in
                            (g.means, g.quats, g.scales, g.opacities, g.sh)))


def test_imports_do_not_touch_cuda():
    """Our modules do not import gsplat at all; gsplat's torch reference does not load its CUDA
    backend (which would try a JIT build here). Checked in a fresh interpreter."""
    code = (
        "import sys\n"
        "import savatar.core.render.api, savatar.core.render.rasterize_cpu, savatar.core.render.rasterize_gsplat\n"
        "assert 'gsplat' not in sys.modules\n"
        "import gsplat.cuda._torch_impl\n"
        "assert 'gsplat.cuda._backend' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_covariance_matches_gsplat():
    gen = torch.Generator().manual_seed(0)
    quats = torch.randn(50, 4, dtype=F64, generator=gen)
    scales = torch.rand(50, 3, dtype=F64, generator=gen) + 0.01
    expected, _ = torch_impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    torch.testing.assert_close(covariance_3d(quats, scales), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_projection_matches_gsplat(mode):
    viewmat = look_from(0.4, -0.2, (0.5, 0.3, -2.0))
    K = intrinsics(64, 48, 50.0)
    g = with_mixed_opacities(scene_in_view(200, viewmat, seed=1, spread=0.9, depth=(0.5, 4.0)), 1)
    # Some behind the camera, some between the camera and the near plane, some too faint.
    g.means[:20] = (torch.tensor([0.0, 0.0, -0.5], dtype=F64) - viewmat[:3, 3]) @ viewmat[:3, :3]
    g.means[20:25] = (torch.tensor([0.1, 0.0, 0.005], dtype=F64) - viewmat[:3, 3]) @ viewmat[:3, :3]
    g.opacities[40:50] = torch.linspace(0.5, 0.99, 10, dtype=F64) / 255.0
    covars, _ = torch_impl._quat_scale_to_covar_preci(g.quats, g.scales, compute_preci=False)
    radii, means2d, depths, conics, comp = torch_impl._fully_fused_projection(
        g.means, covars, viewmat[None], K[None], 64, 48, calc_compensations=mode == "antialiased")
    proj = project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K, 64, 48,
                             rasterize_mode=mode)
    in_front = depths[0] > 0.01
    assert in_front.sum() == 175
    means_c, covars_c = torch_impl._world_to_cam(g.means, covars, viewmat[None])
    _, covars2d = torch_impl._persp_proj(means_c, covars_c, K[None], 64, 48)
    dilated = covars2d[0] + 0.3 * torch.eye(2, dtype=F64)
    torch.testing.assert_close(proj.depths, depths[0], rtol=1e-10, atol=0)
    for ours, theirs in [(proj.means2d, means2d[0]), (proj.conics, conics[0]),
                         (proj.covars2d, dilated)]:
        torch.testing.assert_close(ours[in_front], theirs[in_front], rtol=1e-9, atol=1e-12)
    if mode == "antialiased":
        torch.testing.assert_close(proj.compensations[in_front], comp[0][in_front], rtol=1e-9, atol=0)
        torch.testing.assert_close(proj.opacities, g.opacities * proj.compensations)
    else:
        assert proj.compensations is None and proj.opacities is g.opacities
    # Extent and culling as gsplat's CUDA projection: opacity-aware radii per axis.
    expected_radii = gsplat_projection(g, viewmat, K, 64, 48, mode)[-1]
    assert proj.radii.shape == (200, 2) and proj.radii.dtype == torch.int32
    torch.testing.assert_close(proj.radii, expected_radii, rtol=0, atol=0)
    torch.testing.assert_close(proj.valid, (expected_radii > 0).all(-1))
    assert not proj.valid[40:50].any()  # opacity below 1/255
    assert not proj.valid[~in_front].any() and (proj.radii[~in_front] == 0).all()
    centre_inside = in_front & (means2d[0] >= 0).all(-1) & (means2d[0, :, 0] < 64) & (means2d[0, :, 1] < 48)
    assert proj.valid[centre_inside & (proj.opacities >= ALPHA_MIN)].all()
    # Opacities past 255 exp(-3.33^2 / 2) ~ 1.0034 reach the 3.33-sigma cap, which is all that
    # gsplat's PyTorch reference knows: then its radii are ours exactly.
    capped = project_gaussians(g.means, g.quats, g.scales, torch.full_like(g.opacities, 1.01),
                               viewmat, K, 64, 48)
    torch.testing.assert_close(capped.radii, radii[0], rtol=0, atol=0)


def test_faint_gaussian_has_a_smaller_extent():
    """A Gaussian's extent is e = sqrt(2 ln(255 opacity)) standard deviations per axis: about 1.8
    at opacity 0.02 against 3.3 at 0.9, and so is what it draws."""
    width, height, focal = 64, 48, 60.0
    K = intrinsics(width, height, focal)
    viewmat = torch.eye(4, dtype=F64)
    rotation = torch.tensor([[0.9, 0.1, 0.3, -0.2]], dtype=F64)
    scales = torch.tensor([[0.12, 0.04, 0.05]], dtype=F64)
    radii, covered = {}, {}
    for opacity in (0.02, 0.9):
        g = WorldGaussians(means=torch.tensor([[0.02, -0.01, 1.5]], dtype=F64), quats=rotation,
                           scales=scales, opacities=torch.tensor([opacity], dtype=F64),
                           sh=torch.zeros(1, 1, 3, dtype=F64))
        proj = project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K, width, height)
        sigma = torch.sqrt(torch.diagonal(proj.covars2d[0]))
        e = math.sqrt(2.0 * math.log(255.0 * opacity))
        torch.testing.assert_close(proj.radii[0], torch.ceil(e * sigma).to(torch.int32))
        radii[opacity] = proj.radii[0]
        alpha = rasterize_cpu(g, viewmat, K, width, height, torch.zeros(3, dtype=F64)).alpha[..., 0]
        covered[opacity] = alpha > 0
        # What it draws is the ellipse of Mahalanobis radius e: alpha >= 1/255 there, 0 outside.
        ys, xs = torch.meshgrid(torch.arange(height, dtype=F64), torch.arange(width, dtype=F64),
                                indexing="ij")
        d = torch.stack([xs + 0.5, ys + 0.5], -1) - proj.means2d[0]
        a, b, c = proj.conics[0]
        mahalanobis = torch.sqrt(a * d[..., 0] ** 2 + 2 * b * d[..., 0] * d[..., 1] + c * d[..., 1] ** 2)
        assert (alpha[mahalanobis < e - 1e-6] >= ALPHA_MIN).all()
        assert (alpha[mahalanobis > e + 1e-6] == 0).all()
    assert (radii[0.02] < radii[0.9]).all() and (radii[0.02] >= 1).all()
    assert 0 < covered[0.02].sum() < 0.4 * covered[0.9].sum()
    assert not (covered[0.02] & ~covered[0.9]).any()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat(degree):
    gen = torch.Generator().manual_seed(degree)
    sh = torch.randn(100, 16, 3, dtype=F64, generator=gen)
    dirs = torch.nn.functional.normalize(torch.randn(100, 3, dtype=F64, generator=gen), dim=-1)
    expected = torch_impl._spherical_harmonics(degree, dirs, sh)
    torch.testing.assert_close(eval_sh(sh, dirs, degree), expected, rtol=1e-10, atol=1e-12)
    k = (degree + 1) ** 2
    torch.testing.assert_close(eval_sh(sh[:, :k], dirs), expected, rtol=1e-10, atol=1e-12)


def test_sh_to_rgb_uses_direction_from_camera_and_clamps():
    viewmat = look_from(0.3, 0.1, (0.2, -0.1, -1.0))
    gen = torch.Generator().manual_seed(3)
    means = torch.randn(64, 3, dtype=F64, generator=gen)
    sh = torch.randn(64, 16, 3, dtype=F64, generator=gen)
    centre = camera_center(viewmat)
    torch.testing.assert_close(centre, torch.tensor([0.2, -0.1, -1.0], dtype=F64))
    expected = torch.clamp_min(torch_impl._spherical_harmonics(3, means - centre, sh) + 0.5, 0.0)
    rgb = sh_to_rgb(sh, means, centre)
    torch.testing.assert_close(rgb, expected, rtol=1e-10, atol=1e-12)
    assert (rgb == 0).any() and (rgb > 0).any()
    grey = rgb_to_sh0(torch.full((64, 3), 0.25, dtype=F64))[:, None, :]
    torch.testing.assert_close(sh_to_rgb(grey, means, centre), torch.full((64, 3), 0.25, dtype=F64))


# The compiled compositor where numba is installed (it is a dependency), and the PyTorch one.
COMPOSITORS = ["numba", "torch"] if resolve_compositor("auto") == "numba" else ["torch"]


@pytest.mark.parametrize("compositor", COMPOSITORS)
@pytest.mark.parametrize("mode", ["classic", "antialiased"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_plain_reference(mode, seed, compositor):
    viewmat = look_from(-0.3, 0.2, (0.1, -0.2, -0.4))
    K = intrinsics(37, 29, 30.0)
    g = with_mixed_opacities(
        scene_in_view(150, viewmat, seed=seed, opacity=(0.3, 1.0), spread=0.3, scale=(0.08, 0.3)), seed)
    background = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    *expected, stopped = reference_render(g, viewmat, K, 37, 29, background, mode)
    out = rasterize_cpu(g, viewmat, K, 37, 29, background, rasterize_mode=mode, compositor=compositor)
    # The scene exercises early stopping, the alpha clamp, partial coverage and empty pixels.
    assert stopped.any() and not stopped.all()
    assert (g.opacities > ALPHA_MAX).any()
    assert ((out.alpha > 0) & (out.alpha < 0.5)).any() and (out.alpha == 0).any()
    for ours, theirs in zip((out.rgb, out.alpha, out.depth), expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("compositor", COMPOSITORS)
def test_gradients_match_autograd_through_reference(compositor):
    viewmat = look_from(0.2, -0.1, (0.0, 0.1, -0.3))
    K = intrinsics(24, 20, 20.0)
    g = with_mixed_opacities(
        scene_in_view(80, viewmat, seed=5, opacity=(0.3, 1.0), spread=0.3, scale=(0.08, 0.3)), 5)
    background = torch.tensor([0.3, 0.1, 0.6], dtype=F64)
    gen = torch.Generator().manual_seed(9)
    weights = [torch.randn(20, 24, c, dtype=F64, generator=gen) for c in (3, 1, 1)]

    def loss(outputs):
        return sum((o * w).sum() for o, w in zip(outputs, weights))

    ours, ref = with_grad(g), with_grad(g)
    out = rasterize_cpu(ours, viewmat, K, 24, 20, background, tile_size=8, compositor=compositor)
    loss((out.rgb, out.alpha, out.depth)).backward()
    *expected, stopped = reference_render(ref, viewmat, K, 24, 20, background)
    assert stopped.any() and (g.opacities > ALPHA_MAX).any()
    loss(expected).backward()
    for name in ("means", "quats", "scales", "opacities", "sh"):
        got, want = getattr(ours, name).grad, getattr(ref, name).grad
        assert want.abs().max() > 0, name
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9, msg=name)


@pytest.mark.parametrize("compositor", COMPOSITORS)
@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_gradcheck_small_scene(mode, compositor):
    viewmat = look_from(0.1, 0.2, (0.0, 0.0, -0.2))
    K = intrinsics(14, 11, 12.0)
    g = scene_in_view(6, viewmat, seed=2, degree=3, scale=(0.08, 0.2), opacity=(0.4, 0.9))
    background = torch.tensor([0.5, 0.2, 0.7], dtype=F64)

    def fn(means, quats, scales, opacities, sh):
        out = rasterize_cpu(WorldGaussians(means, quats, scales, opacities, sh), viewmat, K,
                            14, 11, background, rasterize_mode=mode, tile_size=8,
                            compositor=compositor)
        return out.rgb, out.alpha, out.depth

    inputs = tuple(t.detach().clone().requires_grad_() for t in
                   (g.means, g.quats, g.scales, g.opacities, g.sh))
    # fast_mode checks random projections u^T J v of the full Jacobian: one backward pass
    # instead of one per output pixel.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_single_isotropic_gaussian_blob():
    width, height, focal, z, scale, opacity = 48, 40, 40.0, 2.0, 0.1, 0.8
    # On the optical axis the projection of an isotropic Gaussian is isotropic; the principal
    # point puts it on the centre of pixel (30, 12).
    K = torch.tensor([[focal, 0.0, 30.5], [0.0, focal, 12.5], [0.0, 0.0, 1.0]], dtype=F64)
    viewmat = torch.eye(4, dtype=F64)
    g = WorldGaussians(means=torch.tensor([[0.0, 0.0, z]], dtype=F64),
                       quats=torch.tensor([[0.3, -0.2, 0.5, 0.1]], dtype=F64),
                       scales=torch.full((1, 3), scale, dtype=F64),
                       opacities=torch.tensor([opacity], dtype=F64),
                       sh=rgb_to_sh0(torch.tensor([[[0.9, 0.4, 0.1]]], dtype=F64)))
    out = rasterize_cpu(g, viewmat, K, width, height, torch.zeros(3, dtype=F64))
    alpha = out.alpha[..., 0]
    assert divmod(int(torch.argmax(alpha)), width) == (12, 30)
    torch.testing.assert_close(alpha[12, 30], torch.tensor(opacity, dtype=F64))
    var = (focal * scale / z) ** 2 + 0.3  # projected variance plus the eps2d dilation
    for dy, dx in [(0, 1), (1, 0), (2, 2), (-3, 1)]:
        expected = opacity * math.exp(-0.5 * (dx * dx + dy * dy) / var)
        torch.testing.assert_close(alpha[12 + dy, 30 + dx], torch.tensor(expected, dtype=F64))
    ys, xs = torch.meshgrid(torch.arange(height, dtype=F64), torch.arange(width, dtype=F64), indexing="ij")
    total = alpha.sum()
    centroid = ((alpha * (xs + 0.5)).sum() / total, (alpha * (ys + 0.5)).sum() / total)
    assert abs(centroid[0] - 30.5) < 1e-6 and abs(centroid[1] - 12.5) < 1e-6
    # Nothing beyond the opacity-aware extent sqrt(2 ln(255 opacity)) sigma (6.8 px here),
    # colour is the SH colour over a black background.
    reach = math.sqrt(2 * math.log(255 * opacity) * var)
    assert alpha[12, 30 + math.floor(reach)] >= ALPHA_MIN and alpha[12, 30 + math.ceil(reach)] == 0
    torch.testing.assert_close(out.rgb[12, 30], torch.tensor([0.9, 0.4, 0.1], dtype=F64) * opacity)
    torch.testing.assert_close(out.depth[12, 30, 0], torch.tensor(z, dtype=F64))


def test_tiling_invariance():
    viewmat = look_from(0.0, 0.3, (0.0, 0.0, -1.0))
    K = intrinsics(64, 48, 50.0)
    g = scene_in_view(120, viewmat, seed=4, spread=0.5)
    background = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    base = rasterize_cpu(g, viewmat, K, 64, 48, background, tile_size=16)
    bins = intersect_tiles(project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K,
                                             64, 48), 64, 48, tile_size=16)
    assert (bins.offsets[1:] - bins.offsets[:-1] > 0).sum() == 12  # every 16-px tile has Gaussians
    for tile_size in (4, 8, 64):
        other = rasterize_cpu(g, viewmat, K, 64, 48, background, tile_size=tile_size)
        for x, y in zip((base.rgb, base.alpha, base.depth), (other.rgb, other.alpha, other.depth)):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
    # Moving the principal point by half a tile moves every Gaussian across tile borders.
    shifted_K = K.clone()
    shifted_K[0, 2] += 8
    shifted_K[1, 2] += 8
    shifted = rasterize_cpu(g, viewmat, shifted_K, 72, 56, background, tile_size=16)
    for x, y in zip((base.rgb, base.alpha, base.depth), (shifted.rgb, shifted.alpha, shifted.depth)):
        torch.testing.assert_close(x, y[8:, 8:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("compositor", COMPOSITORS)
def test_float32_compositing_is_float64_to_rounding(compositor):
    """A busy scene (2000 Gaussians, deep lists) in float32 gives the float64 image and
    gradients to float32 rounding, relative to each quantity's scale."""
    viewmat = look_from(0.2, 0.1, (0.0, 0.0, -0.6))
    K = intrinsics(96, 80, 80.0)
    g64 = scene_in_view(2000, viewmat, seed=7, spread=0.4, scale=(0.01, 0.08))
    background = torch.tensor([0.9, 0.9, 0.9])
    results = []
    for dtype in (torch.float32, F64):
        g = with_grad(WorldGaussians(*(t.to(dtype) for t in
                                       (g64.means, g64.quats, g64.scales, g64.opacities, g64.sh))))
        out = rasterize_cpu(g, viewmat, K, 96, 80, background, compositor=compositor)
        (out.rgb.square().sum() + out.alpha.sum()).backward()
        results.append([t.detach().double() for t in (out.rgb, g.means.grad, g.opacities.grad, g.sh.grad)])
    for single, double in zip(*results):
        assert double.abs().max() > 0
        assert float((single - double).abs().max() / double.abs().max()) < 1e-5


def test_window_render_is_the_full_render_cropped():
    viewmat = look_from(0.0, 0.0, (0.0, 0.0, -1.0))
    K = intrinsics(120, 100, 90.0)
    # A cluster left of and above the centre: the window is a part of the frame.
    g = scene_in_view(300, viewmat, seed=3, spread=0.1, scale=(0.01, 0.05))
    g.means[:, :2] -= 0.25
    background = torch.tensor([0.2, 0.4, 0.6], dtype=F64)
    full = rasterize_cpu(g, viewmat, K, 120, 100, background)
    part, (x0, y0, x1, y1) = rasterize_cpu_window(g, viewmat, K, 120, 100, background, margin=2)
    assert 0 < x0 and 0 < y0 and (x1 - x0) * (y1 - y0) < 0.5 * 120 * 100
    for a, b in zip((full.rgb, full.alpha, full.depth), (part.rgb, part.alpha, part.depth)):
        torch.testing.assert_close(a[y0:y1, x0:x1], b, rtol=0, atol=1e-12)
    outside = torch.ones(100, 120, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert (full.alpha[outside] == 0).all()
    torch.testing.assert_close(full.rgb[outside], background.expand(int(outside.sum()), 3))
    proj = project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K, 120, 100)
    assert support_window(proj, 120, 100, margin=2) == (x0, y0, x1, y1)


def test_background_composited_by_transmittance():
    viewmat = look_from(0.0, 0.0, (0.0, 0.0, -0.5))
    K = intrinsics(40, 30, 30.0)
    g = scene_in_view(30, viewmat, seed=6, spread=0.25)
    black = rasterize_cpu(g, viewmat, K, 40, 30, torch.zeros(3, dtype=F64))
    bg = torch.tensor([0.7, 0.1, 0.4], dtype=F64)
    coloured = rasterize_cpu(g, viewmat, K, 40, 30, bg)
    torch.testing.assert_close(coloured.rgb - black.rgb, (1.0 - black.alpha) * bg)
    torch.testing.assert_close(coloured.alpha, black.alpha)
    empty = black.alpha[..., 0] == 0
    assert empty.any() and (black.alpha > 0.5).any()
    assert (coloured.rgb[empty] == bg).all() and (coloured.depth[empty] == 0).all()


@pytest.mark.parametrize("case", ["empty", "behind", "off_screen"])
def test_nothing_visible(case):
    viewmat = torch.eye(4, dtype=F64)
    K = intrinsics(20, 16, 20.0)
    g = with_grad(scene_in_view(0 if case == "empty" else 10, viewmat, seed=7))
    if case != "empty":
        with torch.no_grad():
            if case == "behind":
                g.means[:, 2] *= -1.0
            else:
                g.means[:, 0] += 10.0 * g.means[:, 2]
    bg = torch.tensor([0.3, 0.6, 0.9], dtype=F64)
    out = rasterize_cpu(g, viewmat, K, 20, 16, bg)
    assert out.rgb.shape == (16, 20, 3) and out.alpha.shape == out.depth.shape == (16, 20, 1)
    assert (out.rgb == bg).all() and (out.alpha == 0).all() and (out.depth == 0).all()
    (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
    for t in (g.means, g.quats, g.scales, g.opacities, g.sh):
        assert t.grad is not None and (t.grad == 0).all()


def test_float32_close_to_float64():
    viewmat = look_from(0.2, 0.1, (0.0, 0.0, -0.5))
    K = intrinsics(64, 64, 60.0)
    g = scene_in_view(300, viewmat, seed=8, opacity=(0.2, 1.0), scale=(0.01, 0.06))
    background = torch.tensor([1.0, 1.0, 1.0], dtype=F64)
    exact = rasterize_cpu(g, viewmat, K, 64, 64, background)
    g32 = WorldGaussians(*(t.float() for t in (g.means, g.quats, g.scales, g.opacities, g.sh)))
    single = rasterize_cpu(g32, viewmat.float(), K.float(), 64, 64, background.float())
    assert single.rgb.dtype == torch.float32
    assert (single.rgb.double() - exact.rgb).abs().max() < 1e-4
    assert (single.alpha.double() - exact.alpha).abs().max() < 1e-4


def test_resolve_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto") == "cpu" and resolve_backend("cpu") == "cpu"
    assert available_backends() == ["cpu"]
    with pytest.raises(RuntimeError, match="CUDA"):
        resolve_backend("gsplat")
    with pytest.raises(ValueError, match="unknown render backend"):
        resolve_backend("vulkan")
    assert resolve_backend("gl") == "gl"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto") == "gsplat" and "gsplat" in available_backends()


def test_render_dispatches_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    viewmat = look_from(0.1, 0.0, (0.0, 0.0, -0.5))
    K = intrinsics(20, 16, 16.0)
    g = scene_in_view(10, viewmat, seed=10)
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=F64)
    out = render(g, viewmat, K, 20, 16, bg)
    direct = rasterize_cpu(g, viewmat, K, 20, 16, bg)
    assert isinstance(out, RenderOutput)
    torch.testing.assert_close(out.rgb, direct.rgb, rtol=0, atol=0)
    with pytest.raises(ValueError, match="viewer"):
        render(g, viewmat, K, 20, 16, bg, backend="gl")
    with pytest.raises(RuntimeError, match="CUDA"):
        render(g, viewmat, K, 20, 16, bg, backend="gsplat")


def test_gsplat_backend_refuses_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from savatar.core.render.rasterize_gsplat import rasterize_gsplat

    g = scene_in_view(3, torch.eye(4, dtype=F64), seed=11)
    with pytest.raises(RuntimeError, match="CUDA"):
        rasterize_gsplat(g, torch.eye(4, dtype=F64), intrinsics(8, 8, 8.0), 8, 8, torch.zeros(3))


def test_gsplat_backend_call(monkeypatch):
    """With CUDA faked and gsplat replaced by a recorder: the arguments gsplat receives and
    the conversion of its outputs."""
    calls = {}

    def fake_rasterization(**kwargs):
        calls.update(kwargs)
        h, w = kwargs["height"], kwargs["width"]
        colors = torch.arange(h * w * 4, dtype=F64).reshape(1, h, w, 4)
        return colors, torch.full((1, h, w, 1), 0.5, dtype=F64), {}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "gsplat", types.SimpleNamespace(rasterization=fake_rasterization))
    # Keeps the tensors where they are: this CPU-only torch cannot move them to a GPU.
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    g = scene_in_view(5, torch.eye(4, dtype=F64), seed=12, degree=2)
    view, K, bg = torch.eye(4, dtype=F64), intrinsics(6, 4, 8.0), torch.tensor([0.1, 0.2, 0.3])
    out = render_mod.render(g, view, K, 6, 4, bg, backend="gsplat", sh_degree=1)
    assert calls["sh_degree"] == 1 and calls["render_mode"] == "RGB+ED" and calls["packed"] is False
    assert calls["rasterize_mode"] == "classic"
    assert calls["scales"] is g.scales and calls["opacities"] is g.opacities
    assert calls["quats"] is g.quats and calls["colors"] is g.sh
    assert calls["means"] is g.means and calls["width"] == 6 and calls["height"] == 4
    torch.testing.assert_close(calls["viewmats"], view[None])
    torch.testing.assert_close(calls["Ks"], K[None])
    torch.testing.assert_close(calls["backgrounds"], bg.to(F64)[None])
    channels = torch.arange(4 * 6 * 4, dtype=F64).reshape(4, 6, 4)
    torch.testing.assert_close(out.rgb, channels[..., :3])
    torch.testing.assert_close(out.depth, channels[..., 3:])
    torch.testing.assert_close(out.alpha, torch.full((4, 6, 1), 0.5, dtype=F64))

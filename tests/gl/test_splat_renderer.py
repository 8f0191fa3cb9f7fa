"""The OpenGL splatter agrees with the CPU rasterizer (the image formation of docs/conventions.md, as gsplat's
CUDA kernels do it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from savatar.core.build.default_avatar import default_avatar
from savatar.core.gaussians.binding import deform
from savatar.core.gaussians.gaussians import WorldGaussians
from savatar.core.head.open_head import open_head_model
from savatar.core.render.camera import orbit_camera
from savatar.core.render.rasterize_cpu import rasterize_cpu
from savatar.gl.splat_renderer import SplatRenderer

SIZE = 192


@pytest.fixture(scope="module")
def renderer():
    return SplatRenderer()


@pytest.fixture(scope="module")
def world():
    with torch.no_grad():
        return deform(default_avatar(), open_head_model()().vertices[0])


def cpu_render(g, cam, background):
    with torch.no_grad():
        return rasterize_cpu(g, torch.tensor(cam.viewmat, dtype=torch.float32), torch.tensor(cam.K, dtype=torch.float32),
                             cam.width, cam.height, torch.tensor(background, dtype=torch.float32))


def psnr(a, b):
    return 10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-12))


@pytest.mark.parametrize("yaw, pitch", [(0, 0), (45, 10), (-100, -15)])
def test_gl_matches_cpu_on_the_default_avatar(renderer, world, yaw, pitch):
    cam = orbit_camera(yaw, pitch, 0.7, target=(0, -0.03, -0.02), width=SIZE, height=SIZE)
    bg = (0.2, 0.3, 0.4)
    gl = renderer.render(world, cam, background=bg)
    cpu = cpu_render(world, cam, bg)
    assert (gl.alpha > 0.5).mean() > 0.15  # the head is in view
    assert psnr(gl.rgb, cpu.rgb.numpy()) >= 35
    assert np.abs(gl.alpha - cpu.alpha.numpy()).max() < 0.01
    covered = gl.alpha[..., 0] > 0.9
    assert np.median(np.abs(gl.depth - cpu.depth.numpy())[..., 0][covered]) < 1e-3


def test_quads_cover_the_support(renderer):
    """Isolated splats of many shapes and opacities (0.005-1), one per 48-px cell: GL draws each
    where the CPU rasterizer does, on the opacity-aware support ellipse with alpha capped at
    0.999, so no pixel of a support is lost to a quad too small."""
    cells, cell = 10, 48
    size = cells * cell
    cam = orbit_camera(0, 0, 1.0, width=size, height=size)
    rng = np.random.default_rng(0)
    n = cells * cells
    # Centres at depth 1, anywhere within a pixel of their cell's middle.
    uv = (np.stack(np.meshgrid(np.arange(cells), np.arange(cells)), -1).reshape(n, 2) + 0.5) * cell
    uv += rng.uniform(-1, 1, (n, 2))
    uv[:5] = np.floor(uv[:5]) + 0.5  # on pixel centres, opaque below: alpha reaches the cap
    fx, fy, cx, cy = cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]
    p_cam = np.stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy, np.ones(n)], 1)
    means = (p_cam - cam.viewmat[:3, 3]) @ cam.viewmat[:3, :3]
    # Standard deviations up to 5 px: needles, discs and dots, supports well inside the cells.
    sigma_px = np.stack([rng.uniform(0.3, 5.0, n), rng.uniform(0.1, 1.5, n), rng.uniform(0.1, 1.5, n)], 1)
    opacities = rng.permutation(np.geomspace(0.005, 1.0, n))
    opacities[:5] = 1.0
    g = WorldGaussians(means=torch.tensor(means, dtype=torch.float64),
                       quats=torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float64),
                       scales=torch.tensor(sigma_px / fx, dtype=torch.float64),
                       opacities=torch.tensor(opacities, dtype=torch.float64),
                       sh=torch.zeros(n, 1, 3, dtype=torch.float64))
    gl = renderer.render(g, cam, background=(0, 0, 0)).alpha[..., 0]
    with torch.no_grad():
        cpu = rasterize_cpu(g, torch.tensor(cam.viewmat), torch.tensor(cam.K), size, size,
                            torch.zeros(3, dtype=torch.float64)).alpha[..., 0].numpy()
    assert (cpu > 0).sum() > 3000
    assert abs(cpu.max() - 0.999) < 1e-9 and abs(gl.max() - 0.999) < 1e-6  # gsplat's cap
    # Pixels drawn by one and not the other are on the rim, alpha within rounding of 1/255 (a
    # pixel lost to a quad too small would differ by at least 1/255).
    differ = (gl > 0) != (cpu > 0)
    assert np.maximum(gl, cpu)[differ].max(initial=0.0) < 1.001 / 255
    assert differ.sum() < 20
    assert np.abs(gl - cpu)[~differ].max() < 5e-5


def test_sort_order_matters_and_is_front_to_back(renderer):
    # Two overlapping opaque discs: the nearer one's colour must win, whichever comes first.
    means = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.3]])
    for order in ([0, 1], [1, 0]):
        g = WorldGaussians(means=means[order], quats=torch.tensor([[1.0, 0, 0, 0]] * 2),
                           scales=torch.full((2, 3), 0.05), opacities=torch.full((2,), 0.99),
                           sh=torch.tensor([[[1.5, -1.7, -1.7]], [[-1.7, -1.7, 1.5]]])[order])
        cam = orbit_camera(0, 0, 1.0, width=64, height=64)
        img = renderer.render(g, cam, background=(0, 0, 0)).rgb
        centre = img[32, 32]
        assert centre[0] > 0.8 and centre[2] < 0.1  # red: the disc at z = 0.5 is nearer the camera at z = 1


def test_gaussians_behind_the_camera_are_not_drawn(renderer):
    g = WorldGaussians(means=torch.tensor([[0.0, 0.0, 2.0]]), quats=torch.tensor([[1.0, 0, 0, 0]]),
                       scales=torch.full((1, 3), 0.2), opacities=torch.tensor([0.9]), sh=torch.ones(1, 1, 3))
    img = renderer.render(g, orbit_camera(0, 0, 1.0, width=32, height=32), background=(0, 0, 0))
    assert img.alpha.max() == 0

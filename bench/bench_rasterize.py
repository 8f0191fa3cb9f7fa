"""CPU rasterizer speed on a head-sized scene: 30K Gaussians, 256x256."""
from __future__ import annotations

import math

import torch

from bench import entry, time_ms
from savatar.core.gaussians.gaussians import WorldGaussians
from savatar.core.render.rasterize_cpu import rasterize_cpu

WIDTH = HEIGHT = 256
FOCAL = 600.0
DISTANCE = 0.6


def head_cloud(n: int = 30_000, seed: int = 0) -> WorldGaussians:
    """Gaussians near the surface of a head-sized ellipsoid (semi-axes 8 x 11 x 10 cm) at the
    world origin, like a mesh-bound avatar: scales 2-5 mm, random orientations and opacities,
    degree-3 SH."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=1)
    radius = 1.0 + 0.05 * torch.randn(n, 1, generator=gen)
    means = dirs * radius * torch.tensor([0.08, 0.11, 0.10])
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.002), math.log(0.005), generator=gen))
    quats = torch.randn(n, 4, generator=gen)
    opacities = torch.empty(n).uniform_(0.2, 1.0, generator=gen)
    sh = 0.3 * torch.randn(n, 16, 3, generator=gen)
    return WorldGaussians(means=means, quats=quats, scales=scales, opacities=opacities, sh=sh)


def front_camera() -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV camera on the +z axis at DISTANCE looking at the origin: (viewmat, K)."""
    viewmat = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    viewmat[2, 3] = DISTANCE
    K = torch.tensor([[FOCAL, 0.0, WIDTH / 2], [0.0, FOCAL, HEIGHT / 2], [0.0, 0.0, 1.0]])
    return viewmat, K


@entry("rasterize_cpu")
def bench_rasterize_cpu() -> dict[str, float]:
    scene = head_cloud()
    viewmat, K = front_camera()
    background = torch.ones(3)

    def forward():
        with torch.no_grad():
            rasterize_cpu(scene, viewmat, K, WIDTH, HEIGHT, background)

    leaves = [scene.means, scene.quats, scene.scales, scene.opacities, scene.sh]

    def forward_backward():
        params = [t.detach().requires_grad_() for t in leaves]
        out = rasterize_cpu(WorldGaussians(*params), viewmat, K, WIDTH, HEIGHT, background)
        (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()

    return {
        "forward_ms": time_ms(forward, repeat=10, warmup=2),
        "forward_backward_ms": time_ms(forward_backward, repeat=10, warmup=2),
    }

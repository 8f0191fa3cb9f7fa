"""The numpy display projection equals the differentiable reference projection, and its quads
bound the opacity-aware support (docs/conventions.md)."""
from __future__ import annotations

import numpy as np
import torch

from savatar.core.render.camera import orbit_camera
from savatar.core.render.project_numpy import project
from savatar.core.render.rasterize_cpu import project_gaussians, support_cutoff


def test_matches_reference_projection():
    g = torch.Generator().manual_seed(0)
    n = 3000
    means = torch.randn(n, 3, generator=g) * 0.15
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.01 + 1e-4
    opac = torch.rand(n, generator=g)
    cam = orbit_camera(25, -10, 0.6, width=320, height=240, fov_y_deg=40)
    vm, K = torch.tensor(cam.viewmat, dtype=torch.float64), torch.tensor(cam.K, dtype=torch.float64)
    ref = project_gaussians(means.double(), quats.double(), scales.double(), opac.double(), vm, K, 320, 240)
    s = project(means.numpy(), quats.numpy(), scales.numpy(), opac.numpy(), cam.viewmat, cam.K, 320, 240)
    v = ref.valid.numpy() & s.valid
    assert v.sum() > n // 3
    assert np.allclose(s.centre[v], ref.means2d.numpy()[v], atol=2e-3)
    cov = ref.covars2d.numpy()
    assert np.allclose(s.cov[v], np.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]], 1)[v], rtol=1e-3, atol=1e-3)
    assert np.allclose(s.conic[v], ref.conics.numpy()[v], rtol=1e-3, atol=1e-5)
    assert np.allclose(s.depth, (means.double() @ vm[:3, :3].T + vm[:3, 3])[:, 2].numpy(), atol=1e-5)
    # The quad half axes bound the support: 0.5 d^T conic d reaches the cutoff on each axis end.
    cut = support_cutoff(ref.opacities).numpy()
    for axis in (s.axis1, s.axis2):
        d = axis[v]
        a, b, c = s.conic[v].T
        power = 0.5 * (a * d[:, 0] ** 2 + 2 * b * d[:, 0] * d[:, 1] + c * d[:, 1] ** 2)
        assert np.allclose(power, cut[v], rtol=2e-3, atol=1e-3)
    # The quad (the rectangle on the two half axes) holds the whole support ellipse: every point
    # of its rim, d = sqrt(2 cut) L (cos t, sin t) with cov = L L^T, lies within the half axes.
    t = np.linspace(0, 2 * np.pi, 97)
    cxx, cxy, cyy = (x.astype(np.float64) for x in s.cov[v].T)
    l11 = np.sqrt(cxx)
    l21, l22 = cxy / l11, np.sqrt(cyy - (cxy / l11) ** 2)
    reach = np.sqrt(2 * cut[v])[:, None]
    rim = reach[..., None] * np.stack([l11[:, None] * np.cos(t),
                                       l21[:, None] * np.cos(t) + l22[:, None] * np.sin(t)], -1)
    for axis in (s.axis1[v], s.axis2[v]):
        along = (rim * axis[:, None, :]).sum(-1) / (axis ** 2).sum(-1)[:, None]
        assert np.abs(along).max() < 1 + 1e-4
    # Validity agrees except for splats whose support just grazes the image border.
    assert (s.valid == ref.valid.numpy()).mean() > 0.99


def test_faint_splats_get_smaller_quads_and_the_faintest_none():
    """Quad half axes scale with the opacity-aware extent sqrt(2 ln(255 opacity)); opacity below
    1/255 is culled (gsplat's CUDA projection)."""
    n = 4
    means = np.tile([[0.01, -0.02, 0.0]], (n, 1)).astype(np.float32)
    quats = np.tile([[0.8, 0.2, -0.3, 0.1]], (n, 1)).astype(np.float32)
    scales = np.tile([[0.02, 0.005, 0.01]], (n, 1)).astype(np.float32)
    opacities = np.array([1.0, 0.9, 0.02, 0.003], np.float32)
    cam = orbit_camera(10, 5, 0.6, width=256, height=256)
    s = project(means, quats, scales, opacities, cam.viewmat, cam.K, 256, 256)
    assert s.valid.tolist() == [True, True, True, False]
    extent = np.sqrt(2 * np.log(255 * opacities[:3]))
    for axis in (s.axis1, s.axis2):
        length = np.hypot(axis[:3, 0], axis[:3, 1])
        assert np.allclose(length / length[0], extent / extent[0], rtol=1e-4)
    assert np.hypot(*s.axis1[2]) < 0.55 * np.hypot(*s.axis1[1])

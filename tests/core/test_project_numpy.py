"""The numpy display projection equals the differentiable reference projection."""
from __future__ import annotations

import numpy as np
import torch

from savatar.core.camera import orbit_camera
from savatar.core.project_numpy import project
from savatar.core.rasterize_cpu import project_gaussians, support_cutoff


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
    # Validity agrees except for splats whose support just grazes the image border.
    assert (s.valid == ref.valid.numpy()).mean() > 0.99

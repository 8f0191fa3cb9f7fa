"""Real spherical harmonics up to degree 3 with the 3DGS constants and basis order
(the same basis as the reference 3DGS CUDA code and gsplat)."""
from __future__ import annotations

import torch

from savatar.core.gaussians.gaussians import SH_C0, sh_coeff_count

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
         0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor, degree: int | None = None) -> torch.Tensor:
    """Evaluate SH radiance.

    sh: (N, K, 3) coefficients, K = (d + 1)^2; dirs: (N, 3) unit view directions.
    degree: bands to use (default: all that sh holds); coefficients above it are ignored.
    Returns (N, 3), without the +0.5 offset (see sh_to_rgb).
    """
    k = sh.shape[1]
    if degree is None:
        degree = int(round(k ** 0.5)) - 1
    if not 0 <= degree <= 3 or sh_coeff_count(degree) > k:
        raise ValueError(f"SH degree {degree} needs {sh_coeff_count(degree)} coefficients, got {k}")
    out = SH_C0 * sh[:, 0]
    if degree == 0:
        return out
    x, y, z = (dirs[:, i:i + 1] for i in range(3))
    out = out - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
    if degree == 1:
        return out
    xx, yy, zz = x * x, y * y, z * z
    xy, yz, xz = x * y, y * z, x * z
    out = (out
           + SH_C2[0] * xy * sh[:, 4]
           + SH_C2[1] * yz * sh[:, 5]
           + SH_C2[2] * (2.0 * zz - xx - yy) * sh[:, 6]
           + SH_C2[3] * xz * sh[:, 7]
           + SH_C2[4] * (xx - yy) * sh[:, 8])
    if degree == 2:
        return out
    return (out
            + SH_C3[0] * y * (3.0 * xx - yy) * sh[:, 9]
            + SH_C3[1] * xy * z * sh[:, 10]
            + SH_C3[2] * y * (4.0 * zz - xx - yy) * sh[:, 11]
            + SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh[:, 12]
            + SH_C3[4] * x * (4.0 * zz - xx - yy) * sh[:, 13]
            + SH_C3[5] * z * (xx - yy) * sh[:, 14]
            + SH_C3[6] * x * (xx - 3.0 * yy) * sh[:, 15])


def camera_center(viewmat: torch.Tensor) -> torch.Tensor:
    """World position (3,) of the camera of a world-to-camera (4, 4) rigid transform: -R^T t."""
    rot, t = viewmat[:3, :3], viewmat[:3, 3]
    return -rot.transpose(0, 1) @ t


def sh_to_rgb(sh: torch.Tensor, means: torch.Tensor, cam_center: torch.Tensor,
              degree: int | None = None) -> torch.Tensor:
    """Per-Gaussian RGB seen from cam_center: max(eval_sh + 0.5, 0).

    sh: (N, K, 3); means: (N, 3) world; cam_center: (3,) world. Returns (N, 3).
    The view direction runs from the camera centre to the mean, as in 3DGS and gsplat.
    """
    dirs = torch.nn.functional.normalize(means - cam_center, dim=-1)
    return torch.clamp_min(eval_sh(sh, dirs, degree) + 0.5, 0.0)

"""EWA projection of many Gaussians at once in plain numpy, for display.

The same formulas as savatar.core.render.rasterize_cpu.project_gaussians (the differentiable
reference; tests compare the two), written as elementwise operations on (N,) columns: no
(N, 3, 3) batched matmuls, which are slow on CPU, and no autograd. Used by the OpenGL splatter
so its vertex shader only expands precomputed quads (llvmpipe runs vertex shaders on one core).

Support, as in gsplat's CUDA kernels (docs/conventions.md): where alpha = opacity exp(-0.5 d^T conic d)
>= 1/255, within 3.33 standard deviations; opacity <= 1/255 is culled. It is an ellipse whose
size shrinks with the opacity, and the quad is the rectangle along its axes: the smallest
parallelogram around an ellipse, so software GL shades as few pixels as it can.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS2D = 0.3
NEAR_PLANE = 0.01
ALPHA_MIN = 1.0 / 255.0
MAX_POWER = 0.5 * 3.33 ** 2  # gsplat's largest extent, 3.33 standard deviations


@dataclass
class Splats:
    """Screen-space splats, all float32 with N rows.

    centre (N, 2) pixels (x right, y down, pixel centres at +0.5); conic (N, 3) = inverse 2D
    covariance (a, b, c); cov (N, 3) = 2D covariance (xx, xy, yy) with the eps2d dilation;
    depth (N,) camera z; axis1, axis2 (N, 2): the support ellipse's half axes in pixels
    (direction times length), support = where 0.5 d^T conic d <= min(MAX_POWER,
    log(opacity * 255)); valid (N,) bool: in front of the near plane, opacity above 1/255 and
    the support's bounding box overlapping the image.
    """

    centre: np.ndarray
    conic: np.ndarray
    cov: np.ndarray
    depth: np.ndarray
    axis1: np.ndarray
    axis2: np.ndarray
    valid: np.ndarray


def project(means: np.ndarray, quats: np.ndarray, scales: np.ndarray, opacities: np.ndarray,
            viewmat: np.ndarray, K: np.ndarray, width: int, height: int) -> Splats:
    """means (N, 3), quats (N, 4) wxyz, scales (N, 3) linear, opacities (N,); viewmat (4, 4)
    world-to-camera (OpenCV), K (3, 3)."""
    f32 = np.float32
    m = np.asarray(means, f32)
    rv = np.asarray(viewmat[:3, :3], f32)
    t = m @ rv.T + np.asarray(viewmat[:3, 3], f32)
    tx, ty, tz = t[:, 0], t[:, 1], t[:, 2]
    in_front = tz >= NEAR_PLANE
    tz = np.where(in_front, tz, f32(1.0))

    q = np.asarray(quats, f32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), f32(1e-12))
    w, x, y, z = q.T
    # Rotation matrix entries r_ij (row i, column j), as in rasterize_cpu.quat_to_rotmat.
    r = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    s = np.asarray(scales, f32)
    # M = R_view R S (camera-frame axes of the Gaussian, scaled): Sigma_c = M M^T.
    mcol = []
    for j in range(3):
        col = [r[0][j], r[1][j], r[2][j]]
        mcol.append([(rv[i, 0] * col[0] + rv[i, 1] * col[1] + rv[i, 2] * col[2]) * s[:, j] for i in range(3)])
    fx, fy, cx, cy = (f32(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    half_x, half_y = f32(0.5 * width) / fx, f32(0.5 * height) / fy
    u = np.clip(tx / tz, -(cx / fx + 0.3 * half_x), (f32(width) - cx) / fx + 0.3 * half_x)
    v = np.clip(ty / tz, -(cy / fy + 0.3 * half_y), (f32(height) - cy) / fy + 0.3 * half_y)
    # Rows of J M (2 x 3 per Gaussian): cov2d = (J M)(J M)^T.
    a = [fx / tz * (mcol[j][0] - u * mcol[j][2]) for j in range(3)]
    b = [fy / tz * (mcol[j][1] - v * mcol[j][2]) for j in range(3)]
    cxx = a[0] * a[0] + a[1] * a[1] + a[2] * a[2] + f32(EPS2D)
    cxy = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    cyy = b[0] * b[0] + b[1] * b[1] + b[2] * b[2] + f32(EPS2D)
    det = np.maximum(cxx * cyy - cxy * cxy, f32(1e-10))
    conic = np.stack([cyy / det, -cxy / det, cxx / det], 1)
    centre = np.stack([fx * tx / tz + cx, fy * ty / tz + cy], 1)

    op = np.asarray(opacities, f32)
    cut = np.minimum(np.log(np.maximum(op, f32(1e-30)) / f32(ALPHA_MIN)), f32(MAX_POWER))
    reach = np.sqrt(2 * np.maximum(cut, 0))
    mid = 0.5 * (cxx + cyy)
    # Eigenvalues of the covariance without cancellation: sqrt(mid^2 - det) loses the small
    # difference on near-circles, mid - disc the minor one on needles.
    l1 = mid + np.hypot(0.5 * (cxx - cyy), cxy)
    l2 = det / l1
    # Major axis direction from the angle: well conditioned for every shape, circles included.
    theta = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    e1 = np.stack([np.cos(theta), np.sin(theta)], 1)
    e2 = np.stack([-e1[:, 1], e1[:, 0]], 1)
    r1, r2 = reach * np.sqrt(l1), reach * np.sqrt(l2)
    # The ellipse's axis-aligned bounding box (gsplat's per-axis radii before rounding up).
    half_x, half_y = reach * np.sqrt(cxx), reach * np.sqrt(cyy)
    on_screen = ((centre[:, 0] + half_x > 0) & (centre[:, 0] - half_x < width)
                 & (centre[:, 1] + half_y > 0) & (centre[:, 1] - half_y < height))
    valid = in_front & (cut > 0) & on_screen
    return Splats(centre.astype(f32), conic.astype(f32), np.stack([cxx, cxy, cyy], 1).astype(f32), t[:, 2],
                  (e1 * r1[:, None]).astype(f32), (e2 * r2[:, None]).astype(f32), valid)

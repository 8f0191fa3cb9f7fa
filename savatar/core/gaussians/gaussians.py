"""Gaussian containers: the bound avatar (face-local, what files hold) and world-space Gaussians
(what renderers take). Conventions are those of docs/conventions.md."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

SH_C0 = 0.28209479177387814


def sh_coeff_count(degree: int) -> int:
    return (degree + 1) ** 2


def sh_degree_of(k: int) -> int:
    degree = int(round(k ** 0.5)) - 1
    if (degree + 1) ** 2 != k or not 0 <= degree <= 3:
        raise ValueError(f"{k} SH coefficients is not (degree + 1)^2 for a degree in 0..3")
    return degree


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """rgb in [0, 1] -> degree-0 SH coefficient (inverse of C0 * sh + 0.5)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    """Degree-0 SH coefficient -> the colour it shows from every side (C0 * sh + 0.5, unclamped)."""
    return sh0 * SH_C0 + 0.5


@dataclass
class WorldGaussians:
    """Gaussians in world space, ready to render.

    means: (N, 3) metres; quats: (N, 4) wxyz (need not be normalized);
    scales: (N, 3) linear standard deviations; opacities: (N,) in [0, 1];
    sh: (N, K, 3) SH coefficients, K = (degree + 1)^2.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(self.sh.shape[1])

    def __len__(self) -> int:
        return self.means.shape[0]

    def subset(self, index: torch.Tensor) -> "WorldGaussians":
        """The Gaussians picked by index: (M,) integer indices or (N,) bool mask."""
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)  # index_select is several times faster than masking
        pick = lambda t: t.index_select(0, index)  # noqa: E731
        return WorldGaussians(pick(self.means), pick(self.quats), pick(self.scales), pick(self.opacities), pick(self.sh))


@dataclass
class GaussianAvatar:
    """Gaussians bound to the triangles of a head model (face-local storage, docs/conventions.md).

    face: (N,) int64 parent triangle; mean: (N, 3) local position in face units;
    rot: (N, 4) unit quaternion wxyz in the face frame; log_scale: (N, 3) log scale relative to
    the face scale; opacity_logit: (N,); sh: (N, K, 3).
    head_model: name of the head model ("open-head" or "flame"); shape: (S,) identity
    coefficients; static_offset: (V, 3) per-vertex offset; default_expr: (E,).
    """

    face: torch.Tensor
    mean: torch.Tensor
    rot: torch.Tensor
    log_scale: torch.Tensor
    opacity_logit: torch.Tensor
    sh: torch.Tensor
    head_model: str
    shape: torch.Tensor
    static_offset: torch.Tensor
    default_expr: torch.Tensor
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.face.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(self.sh.shape[1])

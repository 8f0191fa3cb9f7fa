"""What every render backend returns (savatar.core.render.api.render and the rasterizers behind it)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RenderOutput:
    """rgb: (H, W, 3) with the background composited in; alpha: (H, W, 1) = 1 - final
    transmittance; depth: (H, W, 1) expected camera-space z, sum(z_i a_i T_i) / alpha
    (gsplat's "ED"), 0 where nothing was drawn."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor

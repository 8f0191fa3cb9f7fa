"""The three anti-spike quantities of docs/conventions.md, their penalties and their statistics.

Per Gaussian, all in the parent face's frame and units:
1. anisotropy: log(s_max / s_min), bounded by log(r_max);
2. size: largest scale relative to the parent face scale, i.e. exp(max log_scale);
3. offset: distance of the local mean from the face centre, in face units.
Each penalty is the mean over Gaussians of a hinge above its threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from savatar.core.gaussians.gaussians import GaussianAvatar


@dataclass
class AntiSpikeConfig:
    """Thresholds and weights. Defaults: r_max = 10 (docs/conventions.md); a Gaussian more than twice
    its face's size, or whose centre sits more than 1.5 face units from its face, is a spike
    in the making (initial discs are about one face unit and sit on the face). The size weight
    is the strongest: against frames that reward oversized Gaussians, 5 keeps under 0.2% of
    them over the bound through a run where 1 let 1% through (tests/core/refine/test_refine.py)."""

    max_anisotropy: float = 10.0
    max_size: float = 2.0
    max_offset: float = 1.5
    weight_anisotropy: float = 0.1
    weight_size: float = 5.0
    weight_offset: float = 1.0


QUANTITIES = ("anisotropy", "size", "offset")
PENALTY_MARGIN = 0.9


def quantities(avatar: GaussianAvatar) -> dict[str, torch.Tensor]:
    """(N,) values of the three quantities, in the units their thresholds use (log ratio for
    anisotropy, face units for size and offset)."""
    ls = avatar.log_scale
    return {
        "anisotropy": ls.max(1).values - ls.min(1).values,
        "size": torch.exp(ls.max(1).values),
        "offset": avatar.mean.norm(dim=1),
    }


def thresholds(cfg: AntiSpikeConfig) -> dict[str, float]:
    return {"anisotropy": math.log(cfg.max_anisotropy), "size": cfg.max_size, "offset": cfg.max_offset}


def penalties(avatar: GaussianAvatar, cfg: AntiSpikeConfig) -> dict[str, torch.Tensor]:
    """Differentiable hinge penalties (scalars), already weighted. Each hinge starts at
    PENALTY_MARGIN x its threshold: a Gaussian the image pulls outwards then settles a little
    under the threshold instead of oscillating across it (with the hinge at the threshold,
    1-3% of such Gaussians sat over it at any moment)."""
    q = quantities(avatar)
    t = thresholds(cfg)
    w = {"anisotropy": cfg.weight_anisotropy, "size": cfg.weight_size, "offset": cfg.weight_offset}
    return {k: w[k] * torch.relu(q[k] - PENALTY_MARGIN * t[k]).mean() for k in QUANTITIES}


@dataclass
class QuantityStats:
    """count and fraction over threshold, percentiles (50, 90, 99, max), histogram."""

    threshold: float
    count_over: int
    fraction_over: float
    percentiles: dict[str, float]
    hist_counts: list[int] = field(default_factory=list)
    hist_edges: list[float] = field(default_factory=list)


@torch.no_grad()
def statistics(avatar: GaussianAvatar, cfg: AntiSpikeConfig, bins: int = 40) -> dict[str, QuantityStats]:
    q = quantities(avatar)
    t = thresholds(cfg)
    out = {}
    for k in QUANTITIES:
        v = q[k].float()
        over = int((v > t[k]).sum())
        p = torch.quantile(v, torch.tensor([0.5, 0.9, 0.99])) if len(v) else torch.zeros(3)
        top = max(float(v.max()) if len(v) else 0.0, 1.5 * t[k])
        counts = torch.histc(v, bins=bins, min=0.0, max=top)
        out[k] = QuantityStats(t[k], over, over / max(len(v), 1),
                               {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]),
                                "max": float(v.max()) if len(v) else 0.0},
                               counts.long().tolist(), torch.linspace(0, top, bins + 1).tolist())
    return out


@torch.no_grad()
def spike_mask(avatar: GaussianAvatar, cfg: AntiSpikeConfig) -> torch.Tensor:
    """(N,) bool: Gaussians over any threshold (drawn red by the viewer's highlight mode)."""
    q = quantities(avatar)
    t = thresholds(cfg)
    return (q["anisotropy"] > t["anisotropy"]) | (q["size"] > t["size"]) | (q["offset"] > t["offset"])

"""Sharpen a built avatar's colours against its own source portraits.

Lifting gives each Gaussian the colour under its centre; its disc overlaps its neighbours', so
the render at the source view is the portrait blurred over a few pixels (eyelashes, wrinkles and
hair strands go soft, and dlib's identity judge reads the front render as less the person). A
few Adam steps on the colours alone (L1 + SSIM against the matted face crops, geometry and
opacity untouched) undo that blur. Only Gaussians the sources saw well may move: one seen
grazing or not at all would take the colour of a silhouette pixel and show it face-on from the
side, so each Gaussian's change is scaled by its trust in [0, 1].

All sources go into every step (a sum, sorted by content), so the result does not depend on the
order the portraits were given in.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch

from savatar.core.gaussians.binding import deform
from savatar.core.gaussians.gaussians import GaussianAvatar
from savatar.core.head.head_model import HeadModel
from savatar.core.refine.frame_sources import View
from savatar.core.refine.image_metrics import ssim
from savatar.core.render.api import render

RENDERS = 40  # per build: 40 steps for one portrait, 10 for four
MIN_STEPS = 10
SIZE = 384  # face crop side: the face spans ~150 px, about as fine as 60K Gaussians resolve it
LR = 2.5e-2  # Adam on SH DC: ~1% of the colour range per step
LAMBDA_DSSIM = 0.2  # as refinement
BACKGROUND = (1.0, 1.0, 1.0)
# Pull of each colour back to its lifted value, against the L1 term's pull per pixel a Gaussian
# covers: a Gaussian drawing a whole pixel may change by ~0.04 / PRIOR of the colour range
# (0.13), one squeezed to a tenth of a pixel at the source's expression (a smile's folded
# corners, which open out at rest) ten times less.
PRIOR = 0.3


def _content_key(view: View) -> str:
    return hashlib.sha1(np.ascontiguousarray(view.image).tobytes()).hexdigest()


def fit_colours(avatar: GaussianAvatar, model: HeadModel, views: Sequence[View], trust: np.ndarray,
                renders: int = RENDERS, size: int = SIZE,
                check: Callable[[float], None] | None = None) -> None:
    """Fit avatar.sh[:, 0] (in place) to views (the build's stored sources). trust: (N,) in
    [0, 1] per Gaussian, how far its colour may follow the fit. renders: how many to spend,
    shared among the views (each step renders every view; at least MIN_STEPS steps), so many
    portraits cost about what one does. check(fraction done) is called every step (it may raise
    to cancel)."""
    if not views or renders < 1:
        return
    frames = [v.to_frame(size) for v in sorted(views, key=_content_key)]
    steps = max(min(MIN_STEPS, renders), -(-renders // len(frames)))
    bg = torch.tensor(BACKGROUND, dtype=torch.float32)
    base = avatar.sh[:, 0].detach().clone()
    weight = torch.as_tensor(np.asarray(trust, np.float32))[:, None]
    with torch.no_grad():
        posed = []
        for f in frames:
            verts = model(shape=avatar.shape[None], expr=f.expr[None], pose=f.pose[None],
                          translation=f.translation[None], static_offset=avatar.static_offset).vertices[0]
            posed.append(deform(avatar, verts, model.faces))
    targets = []
    for f in frames:
        m = f.mask.reshape(f.height, f.width, 1)
        targets.append((f.image * m + bg * (1 - m), m))
    dc = torch.nn.Parameter(base.clone())
    # Untrusted Gaussians get no gradient at all: Adam would otherwise move them by its full
    # step whatever the gradient's size.
    free = (weight > 0).float()
    dc.register_hook(lambda g: g * free)
    opt = torch.optim.Adam([dc], lr=LR, eps=1e-15)
    rest = avatar.sh[:, 1:].detach()
    for it in range(steps):
        if check is not None:
            check(it / steps)
        sh = torch.cat([dc[:, None], rest], 1)
        loss = torch.zeros(())
        for f, g, (target, m) in zip(frames, posed, targets):
            pred = render(replace(g, sh=sh), f.viewmat, f.K, f.width, f.height, bg, backend="cpu",
                          rasterize_mode="antialiased").rgb
            pred = pred * m + bg * (1 - m)  # matted as the target: the difference is m x (render - crop)
            loss = loss + (pred - target).abs().mean() + LAMBDA_DSSIM * (1 - ssim(pred, target))
        loss = loss + PRIOR * ((dc - base) ** 2).sum() / (3 * size * size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if not torch.isfinite(dc).all():
        return  # a broken source (NaN pixels): the lifted colours stay
    with torch.no_grad():
        avatar.sh[:, 0] = base + weight * (dc.detach() - base)

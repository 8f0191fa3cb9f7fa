"""The build's colour sharpening (savatar.core.build.colour_fit) on a real portrait: the source
view comes closer to the portrait, Gaussians without trust keep their lifted colour, and the
mouth opening that keeps teeth off the skin around a smile."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from skimage import data as skdata

from savatar.core.build.build import SourceResult, build_avatar, mouth_opening
from savatar.core.build.colour_fit import fit_colours
from savatar.core.gaussians.rig import head_data_for
from savatar.core.head.head_model import HeadModel
from savatar.core.reenact.head_mask import head_mask
from savatar.core.refine.frame_sources import View
from tests.core.build.test_build import masked_scores, render, source_camera


@pytest.fixture(scope="module")
def blurred_build():
    """The astronaut built without sharpening: (avatar, its source)."""
    avatar, (src,) = build_avatar([skdata.astronaut()], count=15000, sharpen=False)
    return avatar, src


def _source_scores(avatar, src: SourceResult) -> tuple[float, float]:
    rgb, alpha = render(avatar, source_camera(src), src.expr, src.pose, src.translation)
    mask = head_mask(src.mask, src.landmarks) & (alpha > 0.95)
    return masked_scores(src.image, rgb, mask)


def test_sharpening_brings_the_source_view_closer(blurred_build):
    blurred, src = blurred_build
    sharp, (src2,) = build_avatar([skdata.astronaut()], count=15000)
    assert torch.equal(sharp.mean, blurred.mean) and torch.equal(sharp.opacity_logit, blurred.opacity_logit)
    before, after = _source_scores(blurred, src), _source_scores(sharp, src2)
    print(f"source view: {before[0]:.2f} dB / SSIM {before[1]:.3f} -> {after[0]:.2f} dB / {after[1]:.3f}")
    # Measured at 60K Gaussians: 19.5 dB / 0.56 -> 21.6 dB / 0.75 after 40 steps.
    assert after[0] > before[0] + 0.5
    assert after[1] > before[1] + 0.05


def test_untrusted_gaussians_keep_their_colour(blurred_build):
    avatar, _ = blurred_build
    avatar = copy.deepcopy(avatar)
    views = [View.from_record(r) for r in avatar.metadata["sources"]]
    trust = np.zeros(len(avatar))
    trust[: len(avatar) // 2] = 1.0
    before = avatar.sh.clone()
    fit_colours(avatar, HeadModel(head_data_for(avatar)), views, trust, renders=5)
    half = len(avatar) // 2
    assert torch.equal(avatar.sh[half:], before[half:])
    assert torch.equal(avatar.sh[:, 1:], before[:, 1:])
    assert float((avatar.sh[:half, 0] - before[:half, 0]).abs().max()) > 0.01


def _mouth_landmarks(gap: float) -> np.ndarray:
    """(478, 3) landmarks: everything at the origin but the mouth's ring and corners, with the
    inner lips `gap` pixels apart around (200, 300) and the eyes' outer corners 200 px apart."""
    from savatar.core.build.build import INNER_LIP_RING, MOUTH_CORNERS
    from savatar.core.build.hair_colour import EYE_CORNERS

    lm = np.zeros((478, 3))
    n = len(INNER_LIP_RING)
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    lm[list(INNER_LIP_RING), 0] = 200 - 40 * np.cos(angle)
    lm[list(INNER_LIP_RING), 1] = 300 - 0.5 * gap * np.sin(angle)
    lm[13, :2], lm[14, :2] = (200, 300 - gap / 2), (200, 300 + gap / 2)
    lm[list(MOUTH_CORNERS), :2] = [(155, 300), (245, 300)]
    lm[list(EYE_CORNERS), :2] = [(100, 150), (300, 150)]
    return lm


def test_mouth_opening_is_the_parted_lips_only():
    image = np.zeros((400, 400, 3), np.float32)
    parted = mouth_opening(SourceResult("parted", image=image, landmarks=_mouth_landmarks(40.0)))
    assert parted[300, 200] == 1.0 and parted[300, 225] == 1.0
    assert parted[150, 200] == 0.0 and parted[300, 280] == 0.0
    closed = mouth_opening(SourceResult("closed", image=image, landmarks=_mouth_landmarks(2.0)))
    assert not closed.any()

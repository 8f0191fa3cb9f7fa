"""Hair volume: the cranium grows until the head mesh's outline meets the person's head outline,
and only the cranium grows."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from savatar.core.build.hair_volume import MAX_GROWTH, growable_weights, hair_offsets
from savatar.core.drive.tracking import TRACKING_VIEWMAT, intrinsics_for
from savatar.core.head.head_model import HeadModel
from savatar.core.head.open_head import load_open_head_data
from savatar.core.reenact.head_mask import head_mask
from savatar.core.refine.frame_sources import HeadMasker

SIZE = 320


@pytest.fixture(scope="module")
def data():
    return load_open_head_data()


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    cam = points @ TRACKING_VIEWMAT[:3, :3].T
    return np.stack([K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2], K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]], 1)


def source(data, person_scale: float, static_offset=None):
    """A frontal portrait's fit whose person mask is the head mesh's own silhouette scaled by
    person_scale about the head's projected centre (a head of hair that much larger), and the
    head's posed mesh (V, 3) and projected landmarks."""
    expr, pose = np.zeros(data.exprdirs.shape[2], np.float32), np.zeros(15, np.float32)
    translation = np.array([0.0, 0.0, -0.55], np.float32)
    K = intrinsics_for(SIZE, SIZE, 40.0)
    sil = HeadMasker(data, None, static_offset).silhouette(expr, pose, translation, TRACKING_VIEWMAT, K, SIZE, SIZE)
    ys, xs = np.nonzero(sil)
    centre = (xs.mean(), ys.min() + 0.4 * (ys.max() - ys.min()))
    m = cv2.getRotationMatrix2D(centre, 0.0, person_scale)
    person = cv2.warpAffine(sil.astype(np.float32), m, (SIZE, SIZE), flags=cv2.INTER_NEAREST)
    with torch.no_grad():
        verts = HeadModel(data)(translation=torch.as_tensor(translation)[None],
                                static_offset=static_offset).vertices[0].double().numpy()
    faces = data.faces[data.lmk_faces]
    lm = project((verts[faces] * data.lmk_bary[:, :, None]).sum(1), K)
    return SimpleNamespace(mask=person, landmarks=lm, K=K, expr=expr, pose=pose, translation=translation), verts


def test_the_cranium_grows_to_the_outline_and_the_face_stays(data):
    src, verts = source(data, 1.2)
    offsets = hair_offsets(data, np.zeros(data.shapedirs.shape[2]), [src])
    weight = growable_weights(data)
    assert not offsets[weight == 0].any()  # the face, eyes, mouth and neck do not move
    face = np.asarray(data.vertex_regions["face"])
    assert not offsets[face].any()
    grown = np.linalg.norm(offsets, axis=1)
    assert grown.max() > 0.01  # centimetres of hair, not a rounding error
    # The grown head's outline meets the person's: its top is below the mask's top by at most a
    # few percent of the head's height, and above it by no more than rounding.
    K = src.K
    grown_sil = HeadMasker(data, None, torch.as_tensor(offsets, dtype=torch.float32)).silhouette(
        src.expr, src.pose, src.translation, TRACKING_VIEWMAT, K, SIZE, SIZE)
    bare_top = np.flatnonzero(HeadMasker(data).silhouette(src.expr, src.pose, src.translation, TRACKING_VIEWMAT, K,
                                                          SIZE, SIZE).any(1))
    mask_top = np.flatnonzero(src.mask.any(1))[0]
    grown_top = np.flatnonzero(grown_sil.any(1))[0]
    height = bare_top[-1] - bare_top[0]
    assert mask_top - 2 <= grown_top <= mask_top + 0.06 * height, (mask_top, grown_top, bare_top[0])
    assert grown_top < bare_top[0] - 0.05 * height  # it did grow towards the hair
    # Growth is bounded: no vertex moves more than MAX_GROWTH of its distance from the centre.
    assert grown.max() < MAX_GROWTH * np.ptp(verts, 0).max()


def test_no_hair_beyond_the_head_no_growth(data):
    src, _ = source(data, 1.0)
    offsets = hair_offsets(data, np.zeros(data.shapedirs.shape[2]), [src])
    assert np.abs(offsets).max() < 1e-3  # at most a smoothing ripple, no volume


def test_grown_silhouette_meets_the_head_mask(data):
    """Hair falling past the ears too: the person is the head scaled by 1.25 (wider beside the
    cheeks and the neck, not only above). The grown mesh covers the scored head mask (person
    cut below the chin) and does not spill far beyond it."""
    src, _ = source(data, 1.25)
    offsets = hair_offsets(data, np.zeros(data.shapedirs.shape[2]), [src])
    masker = HeadMasker(data, None, torch.as_tensor(offsets, dtype=torch.float32))
    grown = masker.silhouette(src.expr, src.pose, src.translation, TRACKING_VIEWMAT, src.K, SIZE, SIZE)
    bare = HeadMasker(data).silhouette(src.expr, src.pose, src.translation, TRACKING_VIEWMAT, src.K, SIZE, SIZE)
    mask = head_mask(src.mask, src.landmarks)
    coverage = lambda sil: (sil & mask).sum() / mask.sum()  # noqa: E731
    spill = (grown & ~mask & ~bare).sum() / mask.sum()
    print(f"coverage bare {coverage(bare):.3f} grown {coverage(grown):.3f}, spill {spill:.3f}")
    # Measured: bare 0.70, grown 0.98, spill 0.03 (no model runs here: the same on any CPU).
    assert coverage(bare) < 0.85
    assert coverage(grown) > 0.96
    assert spill < 0.06

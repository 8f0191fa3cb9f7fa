"""Volume for hair and headwear: the cranium grown outwards until the head mesh's outline meets
the person's head outline in each source portrait.

A bare head model under a full head of hair is a face painted onto a bald head: the hair's
colours smear over the skull and the hair's outline is missing. Gaussians must stay close to
their faces (the anti-spike offset penalty, docs/conventions.md), so the volume goes into the
mesh's per-vertex static offset, and the Gaussians bound to the cranium ride on it.

Per source, around the projected head centre: the head mask's outline radius (the same mask the
fidelity scores use: person segmentation cut below the chin) and the posed mesh's outline radius
are taken per angle; their ratio (at least 1: hair only adds, and at most 1 + MAX_GROWTH) scales
each cranium vertex radially about the cranium's centre, by the angle at which it projects. The
back of the head, which no portrait sees, grows with the outline it stands behind: a plausible
smooth volume. The face and its border are left where the landmark fit put them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

from savatar.core.drive.tracking import TRACKING_VIEWMAT, project_tracking
from savatar.core.head.head_model import HeadModelData
from savatar.core.reenact.head_mask import head_mask
from savatar.core.refine.frame_sources import HeadMasker

ANGLE_BINS = 180
SMOOTH_BINS = 5  # circular smoothing of the outline ratios, in bins on each side (10 degrees)
MAX_GROWTH = 0.6  # the cranium's radius grows by at most this fraction in any direction
FACE_CLEARANCE = 0.01  # metres from the face region where growth starts
FACE_BLEND = 0.03  # metres over which growth fades in beyond the clearance
SMOOTH_PASSES = 10  # neighbour averaging of the offsets over the mesh


def _polar(points: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angle bin (N,), radius (N,)) of image points (N, 2) around centre (2,)."""
    d = points - centre
    angle = np.arctan2(d[:, 1], d[:, 0])
    bins = ((angle + np.pi) / (2 * np.pi) * ANGLE_BINS).astype(np.int64) % ANGLE_BINS
    return bins, np.hypot(d[:, 0], d[:, 1])


def _outline(bins: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Largest radius per angle bin (ANGLE_BINS,), 0 where a bin has no point."""
    out = np.zeros(ANGLE_BINS)
    np.maximum.at(out, bins, radius)
    return out


def _smooth_circular(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over +-SMOOTH_BINS of the valid bins, wrapping around; 1 where none is valid."""
    v = np.where(valid, values, 0.0)
    kernel = np.ones(2 * SMOOTH_BINS + 1)
    wrap = lambda a: np.concatenate([a[-SMOOTH_BINS:], a, a[:SMOOTH_BINS]])  # noqa: E731
    total = np.convolve(wrap(v), kernel, "valid")
    count = np.convolve(wrap(valid.astype(float)), kernel, "valid")
    return np.where(count > 0, total / np.maximum(count, 1e-12), 1.0)


def growable_weights(data: HeadModelData) -> np.ndarray:
    """(V,) in [0, 1]: how much each vertex may grow: cranium (scalp) vertices, fading in over
    FACE_BLEND beyond FACE_CLEARANCE from the face region; 0 elsewhere."""
    verts = np.asarray(data.v_template, np.float64)
    weight = np.zeros(len(verts))
    scalp = np.asarray(data.vertex_regions.get("scalp", []), np.int64)
    face = np.asarray(data.vertex_regions.get("face", []), np.int64)
    if not len(scalp):
        return weight
    if len(face):
        dist, _ = cKDTree(verts[face]).query(verts[scalp])
        weight[scalp] = np.clip((dist - FACE_CLEARANCE) / FACE_BLEND, 0.0, 1.0)
    else:
        weight[scalp] = 1.0
    return weight


def hair_offsets(data: HeadModelData, shape: np.ndarray, sources: Sequence) -> np.ndarray:
    """(V, 3) static offset growing the cranium to each source's head outline.

    sources: fitted build sources (savatar.core.build.build.SourceResult: image, landmarks,
    mask = person probability, K, expr, pose, translation) with the identity shape (S,)."""
    masker = HeadMasker(data, shape)  # the posed mesh's outline, and its head model
    model = masker.model
    weight = growable_weights(data)
    grow = np.flatnonzero(weight > 0)
    offsets = np.zeros((len(data.v_template), 3))
    if not len(grow) or not len(sources):
        return offsets
    scalp = np.asarray(data.vertex_regions["scalp"], np.int64)
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    with torch.no_grad():
        neutral = model(shape=f(shape)).vertices[0].double().numpy()
    lo, hi = neutral[scalp].min(0), neutral[scalp].max(0)
    centre_3d = (lo + hi) / 2
    ratio_sum = np.zeros(len(grow))
    for src in sources:
        with torch.no_grad():
            posed = model(shape=f(shape), expr=f(src.expr), pose=f(src.pose),
                          translation=f(src.translation)).vertices[0].double().numpy()
        mask = head_mask(src.mask, src.landmarks)
        if not mask.any():
            ratio_sum += 1.0
            continue
        uv = project_tracking(posed, src.K)[:, :2]
        plo, phi = posed[scalp].min(0), posed[scalp].max(0)
        centre = project_tracking(((plo + phi) / 2)[None], src.K)[0, :2]
        ys, xs = np.nonzero(mask)
        r_mask = _outline(*_polar(np.stack([xs + 0.5, ys + 0.5], 1), centre))
        # The whole mesh's outline, neck included (the mask holds the neck down to its cut, and
        # beside the neck only what stands out of the mesh's own neck is hair), from its raster:
        # a vertex-based outline misses the rim between sparse cranium vertices.
        h, w = mask.shape
        sil = masker.silhouette(src.expr, src.pose, src.translation, TRACKING_VIEWMAT, src.K, w, h)
        ys, xs = np.nonzero(sil)
        r_mesh = _outline(*_polar(np.stack([xs + 0.5, ys + 0.5], 1), centre))
        valid = (r_mesh > 0) & (r_mask > 0)
        ratio = np.clip(np.where(valid, r_mask / np.maximum(r_mesh, 1e-9), 1.0), 1.0, 1.0 + MAX_GROWTH)
        ratio = _smooth_circular(ratio, valid)
        ratio_sum += ratio[_polar(uv[grow], centre)[0]]
    growth = ratio_sum / len(sources) - 1.0
    offsets[grow] = (weight[grow] * growth)[:, None] * (neutral[grow] - centre_3d)
    return _smooth_over_mesh(offsets, np.asarray(data.faces, np.int64), weight > 0)


def _smooth_over_mesh(values: np.ndarray, faces: np.ndarray, movable: np.ndarray) -> np.ndarray:
    """SMOOTH_PASSES of averaging each movable vertex's value with its mesh neighbours'."""
    v = len(values)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    degree = np.bincount(edges[:, 0], minlength=v).astype(np.float64)
    out = values.copy()
    for _ in range(SMOOTH_PASSES):
        acc = np.zeros_like(out)
        np.add.at(acc, edges[:, 0], out[edges[:, 1]])
        mean = (acc + out) / (degree + 1)[:, None]
        out[movable] = mean[movable]
    return out

"""Volume for hair and headwear: the cranium and neck grown outwards until the head mesh's outline
meets the person's head outline in each source portrait.

A bare head model under a full head of hair is a face painted onto a bald head: the hair's
colours smear over the skull and the hair's outline is missing. Gaussians must stay close to
their faces (the anti-spike offset penalty, docs/conventions.md), so the volume goes into the
mesh's per-vertex static offset, and the Gaussians bound to the cranium and neck ride on it.

Per source, the head mask's outline (the same mask the fidelity scores use: person segmentation
cut below the chin) is compared with the posed mesh's outline in two ways:
- the dome (above the cranium's centre): per angle around the projected centre, the ratio of
  the mask's radius to the mesh's scales each vertex radially about the cranium's centre;
- below it (hair falling past the ears, beside the cheeks and the neck): per row across the face
  axis, the ratio of the mask's extent to the mesh's on each side scales each vertex sideways
  (and backwards, never forwards) about the head's vertical axis.
Ratios are at least 1 (hair only adds) and capped. The back of the head, which no portrait sees,
grows with the outline it stands behind: a plausible smooth volume. The face and its border are
left where the landmark fit put them. Two rounds: the second measures the grown mesh, so what the
smoothing took back is given again.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

from savatar.core.drive.tracking import TRACKING_VIEWMAT, project_tracking
from savatar.core.head.head_model import HeadModelData
from savatar.core.reenact.head_mask import CHIN, FOREHEAD, head_mask
from savatar.core.refine.frame_sources import HeadMasker

ANGLE_BINS = 180
ROW_BINS = 64  # rows across the face axis, over the mask's extent along it
SMOOTH_BINS = 5  # smoothing of the outline ratios, in bins on each side
MAX_GROWTH = 0.6  # the dome's radius grows by at most this fraction in any direction
MAX_SIDE_GROWTH = 1.5  # below the dome, a side may widen to at most 2.5 times its distance from the axis (hair spreading over the shoulders)
DOME_BLEND = 0.02  # metres over which the dome's radial growth turns into the sideways growth
FACE_CLEARANCE = 0.01  # metres from the face region where growth starts
FACE_BLEND = 0.03  # metres over which growth fades in beyond the clearance
SMOOTH_PASSES = 10  # neighbour averaging of the offsets over the mesh
ROUNDS = 4  # measuring rounds: each gives back part of what the smoothing took


def _polar(points: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angle bin (N,), radius (N,)) of image points (N, 2) around centre (2,)."""
    d = points - centre
    angle = np.arctan2(d[:, 1], d[:, 0])
    bins = ((angle + np.pi) / (2 * np.pi) * ANGLE_BINS).astype(np.int64) % ANGLE_BINS
    return bins, np.hypot(d[:, 0], d[:, 1])


def _outline(bins: np.ndarray, radius: np.ndarray, count: int) -> np.ndarray:
    """Largest radius per bin (count,), 0 where a bin has no point."""
    out = np.zeros(count)
    np.maximum.at(out, bins, radius)
    return out


def _smooth(values: np.ndarray, valid: np.ndarray, circular: bool) -> np.ndarray:
    """Mean over +-SMOOTH_BINS of the valid bins (wrapping around when circular); 1 where none
    is valid."""
    v = np.where(valid, values, 0.0)
    kernel = np.ones(2 * SMOOTH_BINS + 1)
    if circular:
        pad = lambda a: np.concatenate([a[-SMOOTH_BINS:], a, a[:SMOOTH_BINS]])  # noqa: E731
    else:
        pad = lambda a: np.pad(a, SMOOTH_BINS)  # noqa: E731
    total = np.convolve(pad(v), kernel, "valid")
    count = np.convolve(pad(valid.astype(float)), kernel, "valid")
    return np.where(count > 0, total / np.maximum(count, 1e-12), 1.0)


def _ratio(r_mask: np.ndarray, r_mesh: np.ndarray, limit: float, circular: bool) -> np.ndarray:
    """Per-bin growth ratio mask / mesh in [1, 1 + limit], smoothed; 1 where either is empty."""
    valid = (r_mesh > 0) & (r_mask > 0)
    ratio = np.clip(np.where(valid, r_mask / np.maximum(r_mesh, 1e-9), 1.0), 1.0, 1.0 + limit)
    return _smooth(ratio, valid, circular)


def growable_weights(data: HeadModelData) -> np.ndarray:
    """(V,) in [0, 1]: how much each vertex may grow: cranium and neck (scalp) vertices, fading
    in over FACE_BLEND beyond FACE_CLEARANCE from the face region; 0 elsewhere."""
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


def _source_ratios(masker: HeadMasker, shape_t, offsets: np.ndarray, src, centre_3d: np.ndarray,
                   grow: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For one source: (radial ratio (G,), sideways ratio (G,)) of the growable vertices grow,
    on the mesh already grown by offsets (V, 3); None when the source has no head mask."""
    mask = head_mask(src.mask, src.landmarks)
    if not mask.any():
        return None
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    with torch.no_grad():
        posed = masker.model(shape=shape_t, expr=f(src.expr), pose=f(src.pose), translation=f(src.translation),
                             static_offset=masker.static_offset).vertices[0].double().numpy()
        rest = masker.model(shape=shape_t, expr=f(src.expr), pose=f(src.pose),
                            translation=f(src.translation)).vertices[0].double().numpy()
    uv = project_tracking(posed, src.K)[:, :2]
    # The cranium's centre moves with the head: carried by the posed rest mesh's nearest vertex.
    anchor = np.argmin(np.linalg.norm(np.asarray(masker.model.data.v_template) - centre_3d, axis=1))
    centre = project_tracking((centre_3d - masker.model.data.v_template[anchor] + rest[anchor])[None], src.K)[0, :2]
    h, w = mask.shape
    # The whole mesh's outline, neck included, from its raster: a vertex-based outline misses
    # the rim between sparse cranium vertices.
    sil = masker.silhouette(src.expr, src.pose, src.translation, TRACKING_VIEWMAT, src.K, w, h)
    pix = lambda m: np.stack(np.nonzero(m)[::-1], 1) + 0.5  # noqa: E731
    mask_px, sil_px = pix(mask), pix(sil)

    radial = _ratio(_outline(*_polar(mask_px, centre), ANGLE_BINS), _outline(*_polar(sil_px, centre), ANGLE_BINS),
                    MAX_GROWTH, circular=True)[_polar(uv[grow], centre)[0]]

    down = np.asarray(src.landmarks[CHIN, :2] - src.landmarks[FOREHEAD, :2], np.float64)
    down /= max(np.linalg.norm(down), 1e-9)
    right = np.array([-down[1], down[0]])
    along = lambda p: (p - centre) @ down  # noqa: E731
    across = lambda p: (p - centre) @ right  # noqa: E731
    t_mask = along(mask_px)
    lo, hi = t_mask.min(), t_mask.max() + 1e-6
    row = lambda p: np.clip(((along(p) - lo) / (hi - lo) * ROW_BINS).astype(np.int64), 0, ROW_BINS - 1)  # noqa: E731
    sideways = np.ones(len(grow))
    s_vert = across(uv[grow])
    for sign in (1.0, -1.0):
        side = lambda p: np.maximum(sign * across(p), 0.0)  # noqa: E731
        ratio = _ratio(_outline(row(mask_px), side(mask_px), ROW_BINS), _outline(row(sil_px), side(sil_px), ROW_BINS),
                       MAX_SIDE_GROWTH, circular=False)
        here = sign * s_vert > 0
        sideways[here] = ratio[row(uv[grow][here])]
    return radial, sideways


def hair_offsets(data: HeadModelData, shape: np.ndarray, sources: Sequence) -> np.ndarray:
    """(V, 3) static offset growing the cranium and neck to each source's head outline.

    sources: fitted build sources (savatar.core.build.build.SourceResult: image, landmarks,
    mask = person probability, K, expr, pose, translation) with the identity shape (S,)."""
    masker = HeadMasker(data, shape)
    weight = growable_weights(data)
    grow = np.flatnonzero(weight > 0)
    offsets = np.zeros((len(data.v_template), 3))
    if not len(grow) or not len(sources):
        return offsets
    scalp = np.asarray(data.vertex_regions["scalp"], np.int64)
    shape_t = torch.as_tensor(np.asarray(shape, np.float32))[None]
    with torch.no_grad():
        neutral = masker.model(shape=shape_t).vertices[0].double().numpy()
    lo, hi = neutral[scalp].min(0), neutral[scalp].max(0)
    centre_3d = (lo + hi) / 2
    faces = np.asarray(data.faces, np.int64)
    # 1 on the dome, 0 below it, blended over DOME_BLEND around the centre's height.
    dome = np.clip((neutral[grow, 1] - centre_3d[1]) / DOME_BLEND + 0.5, 0.0, 1.0)
    for _ in range(ROUNDS):
        masker.static_offset = torch.as_tensor(offsets, dtype=torch.float32)
        radial_sum, side_sum, used = np.zeros(len(grow)), np.zeros(len(grow)), 0
        for src in sources:
            ratios = _source_ratios(masker, shape_t, offsets, src, centre_3d, grow)
            if ratios is not None:
                radial_sum += ratios[0]
                side_sum += ratios[1]
                used += 1
        if not used:
            break
        current = neutral[grow] + offsets[grow]
        d = current - centre_3d
        radial_step = (radial_sum / used - 1.0)[:, None] * d
        side_dir = d * np.array([1.0, 0.0, 1.0])
        side_dir[:, 2] = np.minimum(side_dir[:, 2], 0.0)  # backwards only: the throat stays
        side_step = (side_sum / used - 1.0)[:, None] * side_dir
        step = np.zeros_like(offsets)
        step[grow] = weight[grow, None] * (dome[:, None] * radial_step + (1 - dome[:, None]) * side_step)
        offsets = offsets + _smooth_over_mesh(step, faces, weight > 0)
    return offsets


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

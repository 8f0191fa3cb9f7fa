"""Colours of the inside of the mouth when no source saw it (every portrait has closed lips).

The head model's own mouth colours are flat: bright teeth from corner to corner and a uniform red
cavity. Real mouths are lit from the front only: the front teeth are bright, the side teeth fall
into shadow, the cavity is dark and the tongue fills its floor. Flat bright teeth also show at the
corners of closed lips, a white smear on every closed-mouth frame; shaded ones do not.

In front of teeth and cavity, the head mesh closes the mouth with a curtain of triangles between
the lips that stretches over the whole opening when the jaw opens. It is coloured as an open
mouth seen from the front when every portrait's lips are closed.
"""
from __future__ import annotations

import numpy as np

from savatar.core.head.mesh_ops import face_areas

TEETH = np.array([0.90, 0.88, 0.82])
CAVITY = np.array([0.16, 0.05, 0.05])
TONGUE = np.array([0.62, 0.30, 0.30])
CURTAIN_STRETCH = 1.5  # area ratio, jaw open over closed, from which a triangle lies between the lips
CURTAIN_CORNERS = 0.85  # of the mouth corners' distance from the middle: beyond, the corners' skin
LIP_LINE = 0.2  # fraction of the opening's height, from the top, that stays dark (the closed lips' line)
UPPER_TEETH_SHOWN = 0.25  # fraction of the opening's height, under the lip line, where upper teeth show
SIDE_SHADE = 0.25  # brightness of the teeth at the mouth corners, relative to the front ones
BACK_SHADE = 0.35  # brightness of the cavity and tongue at the back, relative to the front


def _shaded_teeth(x: np.ndarray) -> np.ndarray:
    """Teeth colours (M, 3) at positions across the mouth x (M,) (x = 0 the symmetry plane): front
    teeth bright, falling off towards the corners like the light into a real mouth."""
    x = np.abs(x)
    side = np.clip(x / max(float(x.max()), 1e-6), 0.0, 1.0)
    return TEETH * (1.0 - (1.0 - SIDE_SHADE) * side ** 1.5)[:, None]


def mouth_interior_colours(positions: np.ndarray, teeth: np.ndarray, cavity: np.ndarray,
                           stretched: np.ndarray | None = None) -> np.ndarray:
    """Colours (N, 3) for the mouth's Gaussians (rows elsewhere are zero).

    positions: (N, 3) on the neutral head (x across, y up, z forwards, x = 0 the symmetry plane);
    teeth, cavity: (N,) bool, the Gaussians of the teeth and of the cavity behind the lips;
    stretched: (N,) bool, optional, those on triangles that stretch when the jaw opens
    (stretched_faces), which stay dark: the tongue's colour drawn out over them was a row of
    pink spikes rising from the floor of an opened mouth."""
    out = np.zeros((len(positions), 3))
    if teeth.any():
        out[teeth] = _shaded_teeth(positions[teeth, 0])
    if cavity.any():
        p = positions[cavity]
        z0, z1 = p[:, 2].min(), p[:, 2].max()
        front = np.clip((p[:, 2] - z0) / max(z1 - z0, 1e-6), 0.0, 1.0)
        shade = BACK_SHADE + (1.0 - BACK_SHADE) * front
        # The tongue is the cavity's floor: its lowest third, away from the lips.
        y0, y1 = p[:, 1].min(), p[:, 1].max()
        floor = (p[:, 1] - y0) < (y1 - y0) / 3
        lips = front > 0.85
        if stretched is not None:
            floor &= ~stretched[cavity]
        colour = np.where((floor & ~lips)[:, None], TONGUE, CAVITY)
        out[cavity] = colour * shade[:, None]
    return out


def stretched_faces(closed: np.ndarray, opened: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) bool: the triangles whose area grows more than CURTAIN_STRETCH times from the mesh
    closed (V, 3) to the mesh opened (V, 3) (the jaw closed and open); faces: (F, 3)."""
    return face_areas(opened, faces) > CURTAIN_STRETCH * np.maximum(face_areas(closed, faces), 1e-12)


def lip_curtain(closed: np.ndarray, opened: np.ndarray, faces: np.ndarray, corner_x: float) -> np.ndarray:
    """(F,) bool: the triangles that close the mesh between the lips: whose area grows more than
    CURTAIN_STRETCH times when the jaw opens, between the mouth's corners. closed, opened: (V, 3)
    the mesh with the jaw closed and open (x across, x = 0 the symmetry plane); faces: (F, 3);
    corner_x: the mouth corners' distance from the symmetry plane.

    Slivers while the mouth is closed, they are what covers the opening when it opens, in front
    of the teeth and the cavity."""
    centre_x = np.abs(closed[faces].mean(1)[:, 0])
    return stretched_faces(closed, opened, faces) & (centre_x < CURTAIN_CORNERS * corner_x)


def curtain_colours(opened: np.ndarray, facing: np.ndarray) -> np.ndarray:
    """Colours (M, 3) for the lip curtain's Gaussians at their positions opened (M, 3) with the
    jaw open: what an open mouth shows from the front, the lips' dark line at the top, the upper
    teeth under it, then the dark cavity, the tongue at the bottom; the teeth shaded towards the
    corners. facing: (M,) bool, the Gaussians that face forwards with the mouth closed, which
    stay dark.

    A closed-lipped portrait's colours there are the lip line's, stretched into streaks over the
    opening; the head model's own are a flat membrane hiding the mouth. Closed, the curtain is a
    sliver whose forward-facing part shows: dark, so closed lips do not show a white line."""
    y0, y1 = opened[:, 1].min(), opened[:, 1].max()
    down = np.clip((y1 - opened[:, 1]) / max(y1 - y0, 1e-6), 0.0, 1.0)  # 0 at the top, 1 at the bottom
    out = np.where((down > 2 / 3)[:, None], TONGUE * BACK_SHADE + (1 - BACK_SHADE) * CAVITY, CAVITY)
    band = (down > LIP_LINE) & (down < LIP_LINE + UPPER_TEETH_SHOWN) & ~facing
    out[band] = _shaded_teeth(opened[:, 0])[band]
    return out

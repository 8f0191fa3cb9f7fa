"""Colours of the inside of the mouth when no source saw it (every portrait has closed lips).

The head model's own mouth colours are flat: bright teeth from corner to corner and a uniform red
cavity. Real mouths are lit from the front only: the front teeth are bright, the side teeth fall
into shadow, the cavity is dark and the tongue fills its floor. Flat bright teeth also show at the
corners of closed lips, a white smear on every closed-mouth frame; shaded ones do not.
"""
from __future__ import annotations

import numpy as np

TEETH = np.array([0.90, 0.88, 0.82])
CAVITY = np.array([0.16, 0.05, 0.05])
TONGUE = np.array([0.62, 0.30, 0.30])
SIDE_SHADE = 0.25  # brightness of the teeth at the mouth corners, relative to the front ones
BACK_SHADE = 0.35  # brightness of the cavity and tongue at the back, relative to the front


def mouth_interior_colours(positions: np.ndarray, teeth: np.ndarray, cavity: np.ndarray) -> np.ndarray:
    """Colours (N, 3) for the mouth's Gaussians (rows elsewhere are zero).

    positions: (N, 3) on the neutral head (x across, y up, z forwards, x = 0 the symmetry plane);
    teeth, cavity: (N,) bool, the Gaussians of the teeth and of the cavity behind the lips."""
    out = np.zeros((len(positions), 3))
    if teeth.any():
        x = np.abs(positions[teeth, 0])
        # Front teeth bright, falling off towards the corners like the light into a real mouth.
        side = np.clip(x / max(float(x.max()), 1e-6), 0.0, 1.0)
        out[teeth] = TEETH * (1.0 - (1.0 - SIDE_SHADE) * side ** 1.5)[:, None]
    if cavity.any():
        p = positions[cavity]
        z0, z1 = p[:, 2].min(), p[:, 2].max()
        front = np.clip((p[:, 2] - z0) / max(z1 - z0, 1e-6), 0.0, 1.0)
        shade = BACK_SHADE + (1.0 - BACK_SHADE) * front
        # The tongue is the cavity's floor: its lowest third, away from the lips.
        y0, y1 = p[:, 1].min(), p[:, 1].max()
        floor = (p[:, 1] - y0) < (y1 - y0) / 3
        lips = front > 0.85
        colour = np.where((floor & ~lips)[:, None], TONGUE, CAVITY)
        out[cavity] = colour * shade[:, None]
    return out

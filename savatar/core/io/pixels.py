"""Conversions between the float images of docs/conventions.md (RGB in [0, 1]) and 8-bit pixels."""
from __future__ import annotations

import numpy as np


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float image in [0, 1] (values outside are clipped) -> uint8, rounded to nearest."""
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

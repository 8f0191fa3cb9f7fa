"""What a file dropped on the stage (or opened from the console) is."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class DropKind(Enum):
    AVATAR = "avatar"
    MOTION = "motion"
    PORTRAIT = "portrait"
    UNKNOWN = "unknown"


def classify(path: str | Path) -> DropKind:
    suffix = Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return DropKind.AVATAR
    if suffix == ".npz":
        return DropKind.MOTION
    if suffix in IMAGE_SUFFIXES:
        return DropKind.PORTRAIT
    return DropKind.UNKNOWN

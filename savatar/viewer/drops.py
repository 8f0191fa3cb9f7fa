"""What a file dropped on the stage (or opened from the console) is."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# A dropped video is a selfie clip to build from (the Build panel's queue gets its chosen
# frames); driving with a video goes through the Drive panel's own field.
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


class DropKind(Enum):
    AVATAR = "avatar"
    MOTION = "motion"
    PORTRAIT = "portrait"
    VIDEO = "video"
    UNKNOWN = "unknown"


def classify(path: str | Path) -> DropKind:
    suffix = Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return DropKind.AVATAR
    if suffix == ".npz":
        return DropKind.MOTION
    if suffix in IMAGE_SUFFIXES:
        return DropKind.PORTRAIT
    if suffix in VIDEO_SUFFIXES:
        return DropKind.VIDEO
    return DropKind.UNKNOWN

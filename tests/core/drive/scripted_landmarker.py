"""A stand-in for MediaPipe in tracking tests (imported by the tests beside it)."""
from __future__ import annotations


class ScriptedLandmarker:
    """Returns the queued landmark arrays (None = no face) in order."""

    def __init__(self, frames):
        self.frames = list(frames)

    def __call__(self, image):
        return self.frames.pop(0)

    def close(self):
        pass

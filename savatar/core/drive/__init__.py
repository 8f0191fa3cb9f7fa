"""Signals that pose a head: face tracking (MediaPipe landmarks -> head parameters) from images and
video, speech to mouth, motion files. The live capture threads that feed them to the viewer are
savatar.drive, outside the core."""

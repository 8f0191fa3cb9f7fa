"""Refinement of an avatar against frames, where those frames come from (frame_sources), and the
image metrics it is scored with."""

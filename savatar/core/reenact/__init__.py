"""Reenactment and its fidelity: an avatar driven by a video of a face, rendered frame for frame,
and measured against the real frames (head mask from the real frame, face signals, scores)."""

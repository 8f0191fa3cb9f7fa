"""Motion files (.npz): per-frame head parameters that drive an avatar.

Layout: `fps` (scalar), `expr` (T, E) expression coefficients, `pose` (T, 15) FLAME axis-angle
pose (root, neck, jaw, left eye, right eye; radians), `translation` (T, 3) metres, and
`expr_names` (E,) strings naming the head model's expression components, so a motion recorded
on one model can be mapped by name onto another.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from savatar.core.head.head_model import POSE_DIM
from savatar.core.io.atomic import atomic_path


class MotionFormatError(ValueError):
    """A motion file is unreadable or inconsistent."""


@dataclass
class Motion:
    """fps; expr: (T, E); pose: (T, 15); translation: (T, 3); expr_names: E names."""

    fps: float
    expr: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    expr_names: list[str]

    def __len__(self) -> int:
        return len(self.pose)

    @property
    def duration(self) -> float:
        return len(self) / self.fps

    def frame_at(self, t: float, loop: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(expr, pose, translation) at time t seconds, linearly interpolated between frames."""
        if len(self) == 1:
            return self.expr[0], self.pose[0], self.translation[0]
        x = t * self.fps
        x = x % len(self) if loop else min(max(x, 0.0), len(self) - 1.0)
        i = int(np.floor(x))
        j = (i + 1) % len(self) if loop else min(i + 1, len(self) - 1)
        w = np.float32(x - i)
        lerp = lambda a: (1 - w) * a[i] + w * a[j]  # noqa: E731
        return lerp(self.expr), lerp(self.pose), lerp(self.translation)

    def remap(self, names: list[str]) -> "Motion":
        """The same motion with expression columns for another model's names (missing: 0)."""
        if names == self.expr_names:
            return self
        expr = np.zeros((len(self), len(names)), np.float32)
        for j, name in enumerate(names):
            if name in self.expr_names:
                expr[:, j] = self.expr[:, self.expr_names.index(name)]
        return Motion(self.fps, expr, self.pose, self.translation, list(names))


def save_motion(motion: Motion, path: str | Path) -> None:
    """Write atomically (see savatar.core.io.atomic)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, fps=np.float32(motion.fps), expr=motion.expr.astype(np.float32),
                            pose=motion.pose.astype(np.float32), translation=motion.translation.astype(np.float32),
                            expr_names=np.array(motion.expr_names))


def load_motion(path: str | Path) -> Motion:
    """Read and check a motion file; MotionFormatError names the file and the problem."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise MotionFormatError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MotionFormatError(f"{path}: not a motion .npz file ({exc})") from None
    for key in ("fps", "pose"):
        if key not in arrays:
            raise MotionFormatError(f"{path}: missing '{key}'; expected fps, expr, pose, translation, expr_names")
    pose = arrays["pose"]
    if pose.ndim != 2 or pose.shape[1] != POSE_DIM or len(pose) == 0:
        raise MotionFormatError(f"{path}: 'pose' has shape {pose.shape}, expected (T, {POSE_DIM}) with T >= 1")
    t = len(pose)
    expr = arrays.get("expr", np.zeros((t, 0), np.float32))
    translation = arrays.get("translation", np.zeros((t, 3), np.float32))
    names = [str(n) for n in arrays.get("expr_names", np.array([f"expr{i:03d}" for i in range(expr.shape[1])]))]
    if expr.ndim != 2 or len(expr) != t:
        raise MotionFormatError(f"{path}: 'expr' has shape {expr.shape}, expected ({t}, E)")
    if translation.shape != (t, 3):
        raise MotionFormatError(f"{path}: 'translation' has shape {translation.shape}, expected ({t}, 3)")
    if len(names) != expr.shape[1]:
        raise MotionFormatError(f"{path}: {len(names)} expr_names for {expr.shape[1]} expression columns")
    fps = float(arrays["fps"])
    if not np.isfinite(fps) or fps <= 0:
        raise MotionFormatError(f"{path}: fps is {fps}, expected a positive number")
    for key, arr in (("expr", expr), ("pose", pose), ("translation", translation)):
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise MotionFormatError(f"{path}: '{key}' must be finite floats")
    return Motion(fps, expr.astype(np.float32), pose.astype(np.float32), translation.astype(np.float32), names)

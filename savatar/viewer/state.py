"""What the viewer is showing and how it is driven: plain data, no GUI or GL, so it can be
tested and shared by the stage and the console."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from savatar.core.drive.motion import Motion
from savatar.core.head.head_model import POSE_DIM

DRIVE_SOURCES = ("sliders", "motion file", "webcam", "microphone", "audio file")


@dataclass
class Drive:
    """Head parameters. The targets come from the sliders or the active source; `current`
    follows them with exponential smoothing (0: none, towards 1: slow)."""

    expr: np.ndarray
    pose: np.ndarray = field(default_factory=lambda: np.zeros(POSE_DIM, np.float32))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    strength: float = 1.0
    smoothing: float = 0.0
    source: str = "sliders"
    current: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def neutral(cls, num_expr: int) -> "Drive":
        return cls(expr=np.zeros(num_expr, np.float32))

    def reset(self) -> None:
        self.expr[:] = 0
        self.pose[:] = 0
        self.translation[:] = 0

    def step(self, target: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance one frame towards target (default: the slider values); returns the
        (expr * strength, pose, translation) to show."""
        expr, pose, trans = target if target is not None else (self.expr, self.pose, self.translation)
        goal = (np.asarray(expr, np.float32) * np.float32(self.strength), np.asarray(pose, np.float32),
                np.asarray(trans, np.float32))
        if self.current is None or self.smoothing <= 0 or self.current[0].shape != goal[0].shape:
            self.current = tuple(g.copy() for g in goal)
        else:
            a = np.float32(1.0 - min(self.smoothing, 0.98))
            self.current = tuple(c + a * (g - c) for c, g in zip(self.current, goal))
        return self.current


@dataclass
class Playback:
    """Motion playback: time in seconds, speed multiplier, loop or stop at the end."""

    motion: Motion | None = None
    name: str = ""
    playing: bool = False
    loop: bool = True
    speed: float = 1.0
    time: float = 0.0

    def load(self, motion: Motion, name: str) -> None:
        self.motion, self.name, self.time, self.playing = motion, name, 0.0, True

    def advance(self, dt: float) -> None:
        if self.motion is None or not self.playing:
            return
        self.time += dt * self.speed
        if not self.loop and self.time >= self.motion.duration:
            self.time, self.playing = self.motion.duration, False
        elif self.loop:
            self.time %= self.motion.duration

    def seek(self, fraction: float) -> None:
        if self.motion is not None:
            self.time = float(np.clip(fraction, 0.0, 1.0)) * self.motion.duration

    @property
    def fraction(self) -> float:
        return self.time / self.motion.duration if self.motion else 0.0

    def frame(self):
        return self.motion.frame_at(self.time, loop=self.loop) if self.motion else None


@dataclass
class Recorder:
    """Records whatever drives the avatar, at a fixed rate, into a Motion."""

    fps: float = 30.0
    recording: bool = False
    _frames: list = field(default_factory=list)
    _clock: float = 0.0

    def start(self) -> None:
        self.recording, self._frames, self._clock = True, [], 0.0

    def add(self, dt: float, params: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        if not self.recording:
            return
        sample = tuple(np.array(p, np.float32) for p in params)
        if not self._frames:
            self._frames.append(sample)
            return
        self._clock += dt
        # A slow frame holds its parameters for every sample period it covered.
        while self._clock >= 1.0 / self.fps:
            self._frames.append(sample)
            self._clock -= 1.0 / self.fps

    def stop(self, expr_names: list[str]) -> Motion | None:
        self.recording = False
        if not self._frames:
            return None
        expr, pose, trans = (np.stack(x) for x in zip(*self._frames))
        return Motion(self.fps, expr, pose, trans, list(expr_names))

    @property
    def frame_count(self) -> int:
        return len(self._frames)


@dataclass
class RenderSettings:
    """How the stage draws. scale_modifier multiplies every Gaussian's size (inspection aid)."""

    backend: str = "gl"
    sh_degree: int = 3
    scale_modifier: float = 1.0
    background: tuple[float, float, float] = (0.93, 0.94, 0.96)
    show_mesh: bool = False
    show_centres: bool = False
    highlight_spikes: bool = False
    show_hud: bool = True
    occlusion: bool = True  # skip splats hidden behind the (shrunk) head mesh or facing away (core.facing)
    quality: str = "auto"  # splat resolution: "auto" (half while moving, full when still), "full", "half"

    def splat_scale(self, moving: bool) -> float:
        return {"full": 1.0, "half": 0.5}.get(self.quality, 0.5 if moving else 1.0)


class StageTimings:
    """Smoothed per-stage latencies in milliseconds, and the rate of frames actually drawn, for
    the HUD. The main loop turns much faster than it draws (a still scene is not redrawn), so
    the rate counts drawn frames, not loop turns."""

    STAGES = ("drive", "deform", "sort", "draw", "console")
    RATE_WINDOW_S = 2.0  # drawn frames older than this do not count in the rate

    def __init__(self, smoothing: float = 0.9):
        self.ms = {s: 0.0 for s in self.STAGES}
        self._a = smoothing
        self._drawn: deque[float] = deque(maxlen=64)

    def record(self, stage: str, ms: float) -> None:
        self.ms[stage] = self._a * self.ms.get(stage, ms) + (1 - self._a) * ms if self.ms.get(stage) else ms

    def drawn(self, t: float) -> None:
        """A frame was drawn at time t (seconds, perf_counter)."""
        self._drawn.append(t)

    def drawn_fps(self, now: float) -> float | None:
        """Frames drawn per second over the last RATE_WINDOW_S, None with fewer than two."""
        recent = [t for t in self._drawn if now - t <= self.RATE_WINDOW_S]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])
